//! TX checksum offload off on a workload interface (`ethtool -K IF tx off`)
//! through the SIOCETHTOOL ioctl. The userspace (`netdev`) datapath reads
//! frames from veths with AF_PACKET and does not complete partial
//! checksums, so TCP from a workload with offload on stalls.

use nix::errno::Errno;

use crate::error::{DatapathError, Result};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn ioctl(fd: libc::c_int, ifname: &str, v: &mut EthtoolValue) -> std::result::Result<(), Errno> {
    let bytes = ifname.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(Errno::ENAMETOOLONG);
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (v as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq whose data points at a live ethtool_value.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Turns TX checksum offload off on `ifname` (in the calling thread's
/// network namespace); returns whether it was on.
pub(crate) fn tx_csum_off(ifname: &str) -> Result<bool> {
    let err = |errno| DatapathError::Interface {
        ifname: ifname.to_string(),
        action: "turning TX checksum offload off",
        errno,
    };
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(Errno::last()));
    }
    let r = (|| {
        let mut v = EthtoolValue {
            cmd: ETHTOOL_GTXCSUM,
            data: 0,
        };
        ioctl(fd, ifname, &mut v)?;
        if v.data == 0 {
            return Ok(false);
        }
        let mut v = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        ioctl(fd, ifname, &mut v)?;
        Ok(true)
    })();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    r.map_err(err)
}
