//! What the CNI spec defines: versions, the environment, the network
//! configuration on stdin, `CNI_ARGS`, and the result a plugin prints.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{codes, CniError};

/// The spec versions this plugin speaks, oldest first; the last is the
/// one it implements.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version it implements.
pub const SPEC_VERSION: &str = "1.1.0";
/// The `type` of its network configuration.
pub const PLUGIN_TYPE: &str = "socketplane";

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"),
                ))
            }
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    /// Reads `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` through
    /// `get` (empty values count as absent).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Env {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Env {
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
        }
    }

    /// A variable the command needs: a CNI error naming it when absent.
    pub fn require<'a>(
        value: &'a Option<String>,
        name: &str,
        command: &str,
    ) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(
                codes::INVALID_ENV,
                format!("{name} is required for {command} but is not set"),
            )
        })
    }
}

/// One attachment a runtime still wants (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// The `ips` capability: addresses asked for, `A.B.C.D[/len]`.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The network configuration on stdin: ours (`network`, `socket`) and
/// what the runtime adds (`runtimeConfig`, `prevResult`, GC's list).
/// Unknown keys are ignored, as the spec asks.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The SocketPlane network; default: `name`.
    #[serde(default)]
    pub network: Option<String>,
    /// The agent's local API socket; default: `/run/socketplane/socketplane.sock`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// The `args.cni.ips` convention for a fixed address.
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The version field alone, to answer in the runtime's version even when
/// the rest of the configuration is bad.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
}

/// The `cniVersion` of a configuration, if it has a readable one.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    serde_json::from_slice::<VersionOnly>(stdin)
        .ok()
        .and_then(|v| v.cni_version)
}

impl NetConf {
    /// Parses and checks a configuration: JSON, a supported version, our type.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::new(
                codes::DECODE,
                "no network configuration on stdin",
            ));
        }
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                codes::DECODE,
                "the network configuration on stdin is not valid JSON",
            )
            .with_details(e.to_string())
        })?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(
                codes::INVALID_CONFIG,
                format!("the network configuration is incomplete or has a bad field: {e}"),
            )
        })?;
        check_version(&conf.cni_version)?;
        if !conf.plugin_type.is_empty() && conf.plugin_type != PLUGIN_TYPE {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!(
                    "this is the {PLUGIN_TYPE:?} plugin, but the configuration is of type {:?}",
                    conf.plugin_type
                ),
            ));
        }
        if conf.network().is_empty() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "the network configuration names no network (set \"network\" or \"name\")",
            ));
        }
        Ok(conf)
    }

    /// The SocketPlane network the configuration is for.
    pub fn network(&self) -> &str {
        self.network
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.name)
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(socketplane_api::defaults::SOCKET))
    }

    /// The fixed address asked for, from the `ips` capability, the
    /// `args.cni.ips` convention or `CNI_ARGS` `IP=` (in that order).
    pub fn requested_ip(&self, cni_args: &CniArgs) -> Result<Option<Ipv4Addr>, CniError> {
        let mut asked: Vec<String> = self.runtime_config.ips.clone();
        if asked.is_empty() {
            if let Some(ips) = self
                .args
                .as_ref()
                .and_then(|a| a.pointer("/cni/ips"))
                .and_then(Value::as_array)
            {
                asked = ips
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
            }
        }
        if asked.is_empty() {
            if let Some(ip) = &cni_args.ip {
                asked = ip.split(',').map(str::to_string).collect();
            }
        }
        let mut v4 = Vec::new();
        for a in &asked {
            let addr = a.split('/').next().unwrap_or(a).trim();
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => v4.push(ip),
                Ok(IpAddr::V6(_)) => {
                    return Err(CniError::new(
                        codes::UNSUPPORTED_FIELD,
                        format!("address {a}: SocketPlane networks are IPv4 only"),
                    ))
                }
                Err(_) => {
                    return Err(CniError::new(
                        codes::INVALID_CONFIG,
                        format!("requested address {a:?} is not an IP address"),
                    ))
                }
            }
        }
        match v4.as_slice() {
            [] => Ok(None),
            [ip] => Ok(Some(*ip)),
            _ => Err(CniError::new(
                codes::UNSUPPORTED_FIELD,
                format!("{} addresses requested; an attachment has one", v4.len()),
            )),
        }
    }
}

/// Whether `v` is a version this plugin answers.
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "unsupported cniVersion {v:?}: this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// Versions before 1.0.0 tag every address with `"version": "4"`.
fn tags_ip_version(v: &str) -> bool {
    v.starts_with("0.")
}

/// `CHECK` exists since 0.4.0.
pub fn has_check(v: &str) -> bool {
    !matches!(v, "0.3.0" | "0.3.1")
}

/// `CNI_ARGS` (`K=V;K=V`): the keys the plugin reads. Others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ip: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

impl CniArgs {
    pub fn parse(s: Option<&str>) -> Result<CniArgs, CniError> {
        let mut map = HashMap::new();
        for pair in s.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                ));
            };
            map.insert(k.to_string(), v.to_string());
        }
        let take = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(CniArgs {
            ip: take("IP"),
            pod_namespace: take("K8S_POD_NAMESPACE"),
            pod_name: take("K8S_POD_NAME"),
        })
    }
}

/// What ADD reports: the attachment as the agent made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The host end of the veth, when the agent named it.
    pub host_ifname: Option<String>,
    pub ifname: String,
    pub mac: String,
    pub sandbox: String,
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// The ADD result in the configuration's version.
pub fn add_result(version: &str, a: &Attached) -> Value {
    let mut interfaces = Vec::new();
    if let Some(host) = &a.host_ifname {
        interfaces.push(json!({ "name": host }));
    }
    interfaces.push(json!({ "name": a.ifname, "mac": a.mac, "sandbox": a.sandbox }));
    let mut ip = json!({
        "address": a.address.to_string(),
        "gateway": a.gateway.to_string(),
        "interface": interfaces.len() - 1,
    });
    if tags_ip_version(version) {
        ip["version"] = "4".into();
    }
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": [ip],
        "routes": [{ "dst": "0.0.0.0/0", "gw": a.gateway.to_string() }],
        // Every agent answers DNS on the network's gateway.
        "dns": { "nameservers": [a.gateway.to_string()] },
    })
}

/// What CHECK compares: the container side of a previous result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub mac: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    /// (destination, gateway)
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

/// The container interface `ifname` in `prevResult`, its addresses and the
/// IPv4 routes.
pub fn expected_from_prev(prev: &Value, ifname: &str) -> Result<Expected, CniError> {
    let bad = |m: String| CniError::new(codes::DECODE, m);
    let interfaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let index = interfaces
        .iter()
        .position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox").and_then(Value::as_str).is_some()
        })
        .ok_or_else(|| {
            bad(format!(
                "prevResult lists no container interface {ifname:?}"
            ))
        })?;
    let mac = interfaces[index]
        .get("mac")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let mut addresses = Vec::new();
    for ip in prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ip.get("interface").and_then(Value::as_u64) != Some(index as u64) {
            continue;
        }
        let text = ip.get("address").and_then(Value::as_str).unwrap_or("");
        if text.contains(':') {
            continue;
        }
        addresses.push(
            text.parse::<Ipv4Net>()
                .map_err(|_| bad(format!("prevResult address {text:?} is not A.B.C.D/LEN")))?,
        );
    }
    let mut routes = Vec::new();
    for r in prev
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let dst = r.get("dst").and_then(Value::as_str).unwrap_or("");
        if dst.contains(':') {
            continue;
        }
        let dst = dst
            .parse::<Ipv4Net>()
            .map_err(|_| bad(format!("prevResult route {dst:?} is not A.B.C.D/LEN")))?;
        let gw = match r.get("gw").and_then(Value::as_str) {
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("prevResult gateway {g:?} is not an address")))?,
            ),
            None => None,
        };
        routes.push((dst, gw));
    }
    Ok(Expected {
        mac,
        addresses,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_and_default_the_network_to_the_name() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"web","type":"socketplane","extra":1}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "web");
        assert_eq!(c.socket(), PathBuf::from(socketplane_api::defaults::SOCKET));
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"x","type":"socketplane","network":"db","socket":"/tmp/s"}"#).unwrap();
        assert_eq!(c.network(), "db");
        assert_eq!(c.socket(), PathBuf::from("/tmp/s"));
    }

    #[test]
    fn bad_configurations_are_clear_cni_errors() {
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, codes::DECODE);
        assert!(e.msg.contains("not valid JSON"), "{e:?}");
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"web"}"#).unwrap_err();
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("9.9.9") && e.msg.contains("1.1.0"), "{e:?}");
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"web","type":"bridge"}"#).unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
        let e = NetConf::parse(b"").unwrap_err();
        assert_eq!(e.code, codes::DECODE);
    }

    #[test]
    fn a_fixed_address_comes_from_capability_args_or_cni_args() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"w","runtimeConfig":{"ips":["10.1.0.9/16"]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.requested_ip(&CniArgs::default()).unwrap(),
            Some("10.1.0.9".parse().unwrap())
        );
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"w","args":{"cni":{"ips":["10.1.0.8"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.requested_ip(&CniArgs::default()).unwrap(),
            Some("10.1.0.8".parse().unwrap())
        );
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w"}"#).unwrap();
        let args = CniArgs::parse(Some(
            "IgnoreUnknown=1;IP=10.1.0.7;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        ))
        .unwrap();
        assert_eq!(args.pod_namespace.as_deref(), Some("ns"));
        assert_eq!(args.pod_name.as_deref(), Some("p"));
        assert_eq!(
            c.requested_ip(&args).unwrap(),
            Some("10.1.0.7".parse().unwrap())
        );
        assert_eq!(c.requested_ip(&CniArgs::default()).unwrap(), None);
        let six = CniArgs {
            ip: Some("fd00::1".into()),
            ..Default::default()
        };
        assert_eq!(
            c.requested_ip(&six).unwrap_err().code,
            codes::UNSUPPORTED_FIELD
        );
        assert!(CniArgs::parse(Some("novalue")).is_err());
    }

    #[test]
    fn results_follow_the_configurations_version_and_check_reads_them_back() {
        let a = Attached {
            host_ifname: Some("spv0123456789a".into()),
            ifname: "eth0".into(),
            mac: "0a:58:0a:01:00:05".into(),
            sandbox: "/var/run/netns/x".into(),
            address: "10.1.0.5/16".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
        };
        let new = add_result("1.1.0", &a);
        assert_eq!(new["interfaces"][1]["sandbox"], "/var/run/netns/x");
        assert_eq!(new["ips"][0]["interface"], 1);
        assert_eq!(new["ips"][0]["gateway"], "10.1.0.1");
        assert!(new["ips"][0].get("version").is_none());
        let old = add_result("0.3.1", &a);
        assert_eq!(old["ips"][0]["version"], "4");
        let e = expected_from_prev(&new, "eth0").unwrap();
        assert_eq!(e.addresses, vec!["10.1.0.5/16".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(
            e.routes,
            vec![(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.1.0.1".parse().unwrap())
            )]
        );
        assert_eq!(e.mac.as_deref(), Some("0a:58:0a:01:00:05"));
        assert!(expected_from_prev(&new, "eth1").is_err());
    }
}
