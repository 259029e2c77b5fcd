//! Value parsers for the flags: `K=V` lists, cluster labels, Kusto endpoints, URLs, sizes, listen
//! addresses, counts, durations and datetimes. Each either returns the typed value or an error that
//! names the flag and quotes what the user wrote (never a secret), so `--help`-style fixes are obvious.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use url::Url;

use super::CliError;
use crate::schedule::window::{WINDOW_VARIABLES, kql_identifier};
use crate::time::{Span, Ticks};

/// `K=V` items into a map: split on the first `=`, trimmed, empty items skipped, duplicate keys
/// (case-insensitive) and control characters rejected.
pub(crate) fn parse_pairs(
    flag: &'static str,
    items: &[String],
) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (key, value) = split_pair(flag, item, "KEY=VALUE")?;
        if out
            .keys()
            .any(|k: &String| k.to_lowercase() == key.to_lowercase())
        {
            return Err(CliError::DuplicateKey {
                flag,
                key: key.to_owned(),
            });
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

pub(super) fn split_pair<'a>(
    flag: &'static str,
    item: &'a str,
    form: &'static str,
) -> Result<(&'a str, &'a str), CliError> {
    let Some((key, value)) = item.split_once('=') else {
        return Err(CliError::NotAPair {
            flag,
            item: item.to_owned(),
            form,
        });
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(CliError::EmptyKey {
            flag,
            item: item.to_owned(),
        });
    }
    if item
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err(CliError::ControlCharacter {
            flag,
            item: item.to_owned(),
        });
    }
    Ok((key, value))
}

/// `--cluster-labels`: as [`parse_pairs`], and each key must give its own KQL variable.
pub(crate) fn parse_cluster_labels(items: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let labels = parse_pairs("--cluster-labels", items)?;
    let mut idents: BTreeMap<String, &String> = BTreeMap::new();
    for key in labels.keys() {
        let ident = kql_identifier(key);
        if WINDOW_VARIABLES.contains(&ident.as_str()) {
            return Err(CliError::LabelRedefinesWindow {
                key: key.clone(),
                ident,
            });
        }
        if let Some(other) = idents.insert(ident.clone(), key) {
            return Err(CliError::LabelVariableClash {
                a: other.clone(),
                b: key.clone(),
                ident,
            });
        }
    }
    Ok(labels)
}

/// `--kusto-endpoint DB=URL` items: split on the first `=`, URL must be http(s), one per database.
pub(crate) fn parse_kusto_endpoints(items: &[String]) -> Result<Vec<(String, Url)>, CliError> {
    const FLAG: &str = "--kusto-endpoint";
    let mut out: Vec<(String, Url)> = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (db, url) = split_pair(FLAG, item, "DB=URL")?;
        let parsed = parse_url(url).map_err(|reason| CliError::BadUrl {
            flag: FLAG,
            item: item.to_owned(),
            reason,
        })?;
        check_url(FLAG, item, &parsed)?;
        if out.iter().any(|(d, _)| d == db) {
            return Err(CliError::DuplicateKey {
                flag: FLAG,
                key: db.to_owned(),
            });
        }
        out.push((db.to_owned(), parsed));
    }
    Ok(out)
}

/// A URL as the user wrote it; the error says what to write instead ("relative URL without a base"
/// means the scheme is missing).
pub(crate) fn parse_url(s: &str) -> Result<Url, String> {
    Url::parse(s).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            format!("not a URL: write it with its scheme, e.g. http://{s}")
        }
        other => format!("not a URL ({other})"),
    })
}

/// A Kusto or output URL: `http://` or `https://` with a host (for gRPC: plaintext or TLS), and no
/// credentials in it. `item` is what the user wrote, quoted back in the error.
pub(super) fn check_url(flag: &'static str, item: &str, url: &Url) -> Result<(), CliError> {
    if url.cannot_be_a_base() {
        // `host:port/path` parses with `host` as the scheme.
        return Err(CliError::BadUrl {
            flag,
            item: item.to_owned(),
            reason: format!(
                "not an http:// or https:// URL: write it with its scheme, e.g. http://{}",
                url.as_str()
            ),
        });
    }
    if !(matches!(url.scheme(), "http" | "https") && url.has_host()) {
        return Err(CliError::BadUrl {
            flag,
            item: item.to_owned(),
            reason: "use an http:// or https:// URL with a host".into(),
        });
    }
    no_userinfo(flag, url)
}

/// Credentials inside a URL would end up in logs and errors: they have their own flags.
fn no_userinfo(flag: &'static str, url: &Url) -> Result<(), CliError> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let instead = match flag {
        "--remote-write-endpoint" => {
            "use --remote-write-basic-auth-username and --remote-write-basic-auth-password-file"
        }
        "--otlp-endpoint" | "--otlp-grpc-endpoint" => {
            "use --otlp-basic-auth-username and --otlp-basic-auth-password-file"
        }
        _ => "Kusto takes Azure AD tokens: see --kusto-auth",
    };
    Err(CliError::BadUrl {
        flag,
        item: shown.to_string(),
        reason: format!("remove the user name and password from the URL: {instead}"),
    })
}

/// A byte size: `1073741824`, `1GiB`, `512MiB`, `64KiB`, `4MB` (decimal), `1.5GiB`; more than 0.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size: use e.g. 1GiB, 512MiB, 4MB or a number of bytes");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `8081`, `:8081` (adx-mon's form) or `HOST:PORT`; a bare port listens on every interface.
pub(crate) fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    t.parse()
        .map_err(|_| format!("{s:?} is not a port: use e.g. 8081, :8081 or 127.0.0.1:8081"))
}

pub(super) fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// A rate in requests per second: a positive, finite number (`20`, `0.5`).
pub(super) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate above 0 (requests per second, e.g. 20 or 0.5)"
        )),
    }
}

pub(super) fn parse_replicas(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

pub(super) fn parse_non_negative_duration(s: &str) -> Result<Span, String> {
    match Span::parse_duration(s.trim()) {
        Ok(d) if d >= Span::ZERO => Ok(d),
        Ok(_) => Err(format!("{s:?} is negative")),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn parse_positive_duration(s: &str) -> Result<Span, String> {
    match parse_non_negative_duration(s)? {
        d if d > Span::ZERO => Ok(d),
        _ => Err(format!("{s:?} must be more than 0s")),
    }
}

pub(super) fn parse_ticks(s: &str) -> Result<Ticks, String> {
    Ticks::parse(s.trim()).map_err(|e| e.to_string())
}

/// `NAMESPACE/NAME` of a MetricsExporter.
pub(super) fn parse_exporter_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}
