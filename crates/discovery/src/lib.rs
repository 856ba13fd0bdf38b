//! Finding cluster peers: mDNS (_socketplane._tcp.local.) and static addresses.
