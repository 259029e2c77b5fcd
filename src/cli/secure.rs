//! The security flags (issue #9), kept apart from the rest of `cli` so each output's group reads as
//! one unit: per-output extra headers and credential (`--remote-write-*`, `--otlp-*` for both OTLP
//! transports), and the TLS
//! flags every outbound connection shares. Validation turns them into [`OutputAuthConfig`] and
//! [`TlsConfig`], rejecting contradictions (two credentials, a scope without Azure, an
//! `Authorization` header next to a credential) with a message naming the flags.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::CliError;
use crate::sink::auth::{
    DEFAULT_AZURE_SCOPE, HeaderSource, OutputAuthConfig, OutputCredential, OutputHeader,
};
use crate::tls::{ClientCert, TlsConfig};

/// How an output authenticates (`--remote-write-auth`, `--otlp-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    None,
    /// `Authorization: Bearer` with the token from --*-bearer-token-file.
    Bearer,
    /// `Authorization: Basic` with --*-basic-auth-username and --*-basic-auth-password-file.
    Basic,
    /// An Azure AD token (workload identity, managed identity, client secret, Azure CLI) for --*-azure-scope.
    Azure,
}

/// TLS for Kusto, the outputs and token endpoints (shared by `run` and `preview`).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Extra trusted CA certificates (PEM bundle) for every outbound connection (Kusto, outputs, Azure token endpoints), added to the system roots.
    #[arg(long, env = "ADXEXPORTER_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,
    /// Do not verify server certificates at all (testing only: logged as a warning and shown by the adxexporter_tls_insecure_skip_verify gauge).
    #[arg(long, env = "ADXEXPORTER_TLS_INSECURE_SKIP_VERIFY")]
    pub tls_insecure_skip_verify: bool,
}

/// Mutual TLS towards the outputs.
#[derive(Debug, Clone, Args)]
pub struct ClientCertArgs {
    /// Client certificate chain (PEM) presented to the outputs for mutual TLS; with --tls-client-key.
    #[arg(
        long,
        env = "ADXEXPORTER_TLS_CLIENT_CERT",
        value_name = "PATH",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(
        long,
        env = "ADXEXPORTER_TLS_CLIENT_KEY",
        value_name = "PATH",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl TlsArgs {
    pub fn config(&self, client: Option<&ClientCertArgs>) -> TlsConfig {
        let client_cert = client.and_then(|c| {
            Some(ClientCert {
                cert: c.tls_client_cert.clone()?,
                key: c.tls_client_key.clone()?,
            })
        });
        TlsConfig {
            ca_file: self.tls_ca_file.clone(),
            client_cert,
            insecure_skip_verify: self.tls_insecure_skip_verify,
        }
    }
}

/// Remote-write headers and credential.
#[derive(Debug, Clone, Args)]
pub struct RemoteWriteAuthArgs {
    /// Extra header on every remote-write request, K=V (repeatable); V=@/path reads the value from a file, re-read when it changes.
    #[arg(long, env = "ADXEXPORTER_REMOTE_WRITE_HEADER", value_name = "K=V")]
    pub remote_write_header: Vec<String>,
    /// Remote-write authentication: none, bearer, basic or azure (default: bearer or basic when their file flags are given, else none).
    #[arg(long, env = "ADXEXPORTER_REMOTE_WRITE_AUTH", value_enum)]
    pub remote_write_auth: Option<AuthKind>,
    /// File holding the remote-write bearer token (re-read when it changes).
    #[arg(
        long,
        env = "ADXEXPORTER_REMOTE_WRITE_BEARER_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub remote_write_bearer_token_file: Option<PathBuf>,
    /// Remote-write basic-auth user name.
    #[arg(
        long,
        env = "ADXEXPORTER_REMOTE_WRITE_BASIC_AUTH_USERNAME",
        value_name = "USER"
    )]
    pub remote_write_basic_auth_username: Option<String>,
    /// File holding the remote-write basic-auth password (re-read when it changes).
    #[arg(
        long,
        env = "ADXEXPORTER_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub remote_write_basic_auth_password_file: Option<PathBuf>,
    /// Azure AD scope of remote-write tokens with --remote-write-auth azure [default: https://monitor.azure.com/.default]
    #[arg(
        long,
        env = "ADXEXPORTER_REMOTE_WRITE_AZURE_SCOPE",
        value_name = "SCOPE"
    )]
    pub remote_write_azure_scope: Option<String>,
}

/// OTLP headers and credential.
#[derive(Debug, Clone, Args)]
pub struct OtlpAuthArgs {
    /// Extra header on every OTLP request, K=V (repeatable; OTLP/gRPC sends it as metadata); V=@/path reads the value from a file, re-read when it changes.
    #[arg(long, env = "ADXEXPORTER_OTLP_HEADER", value_name = "K=V")]
    pub otlp_header: Vec<String>,
    /// OTLP authentication (OTLP/HTTP and OTLP/gRPC): none, bearer, basic or azure (default: bearer or basic when their file flags are given, else none).
    #[arg(long, env = "ADXEXPORTER_OTLP_AUTH", value_enum)]
    pub otlp_auth: Option<AuthKind>,
    /// File holding the OTLP bearer token (re-read when it changes).
    #[arg(long, env = "ADXEXPORTER_OTLP_BEARER_TOKEN_FILE", value_name = "PATH")]
    pub otlp_bearer_token_file: Option<PathBuf>,
    /// OTLP basic-auth user name.
    #[arg(
        long,
        env = "ADXEXPORTER_OTLP_BASIC_AUTH_USERNAME",
        value_name = "USER"
    )]
    pub otlp_basic_auth_username: Option<String>,
    /// File holding the OTLP basic-auth password (re-read when it changes).
    #[arg(
        long,
        env = "ADXEXPORTER_OTLP_BASIC_AUTH_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub otlp_basic_auth_password_file: Option<PathBuf>,
    /// Azure AD scope of OTLP tokens with --otlp-auth azure [default: https://monitor.azure.com/.default]
    #[arg(long, env = "ADXEXPORTER_OTLP_AZURE_SCOPE", value_name = "SCOPE")]
    pub otlp_azure_scope: Option<String>,
}

impl RemoteWriteAuthArgs {
    pub fn config(&self) -> Result<OutputAuthConfig, CliError> {
        validate(Raw {
            prefix: "--remote-write",
            headers: &self.remote_write_header,
            kind: self.remote_write_auth,
            bearer_file: &self.remote_write_bearer_token_file,
            username: &self.remote_write_basic_auth_username,
            password_file: &self.remote_write_basic_auth_password_file,
            scope: &self.remote_write_azure_scope,
        })
    }
}

impl OtlpAuthArgs {
    pub fn config(&self) -> Result<OutputAuthConfig, CliError> {
        validate(Raw {
            prefix: "--otlp",
            headers: &self.otlp_header,
            kind: self.otlp_auth,
            bearer_file: &self.otlp_bearer_token_file,
            username: &self.otlp_basic_auth_username,
            password_file: &self.otlp_basic_auth_password_file,
            scope: &self.otlp_azure_scope,
        })
    }
}

/// One output's flags, whatever its prefix.
struct Raw<'a> {
    prefix: &'static str,
    headers: &'a [String],
    kind: Option<AuthKind>,
    bearer_file: &'a Option<PathBuf>,
    username: &'a Option<String>,
    password_file: &'a Option<PathBuf>,
    scope: &'a Option<String>,
}

/// Headers the output sets itself: overriding them would break the protocol.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
    // gRPC's own (OTLP/gRPC sends the headers as metadata); `grpc-*` names are refused below
    "te",
];

fn validate(raw: Raw<'_>) -> Result<OutputAuthConfig, CliError> {
    let p = raw.prefix;
    let err = |flag: String, reason: String| CliError::Invalid { flag, reason };
    let headers = parse_headers(p, raw.headers)?;
    let has_basic = raw.username.is_some() || raw.password_file.is_some();
    let kind = match raw.kind {
        Some(k) => k,
        None if raw.bearer_file.is_some() && has_basic => {
            return Err(err(
                format!("{p}-bearer-token-file"),
                format!("give either a bearer token file or {p}-basic-auth-*, not both"),
            ));
        }
        None if raw.bearer_file.is_some() => AuthKind::Bearer,
        None if has_basic => AuthKind::Basic,
        None => AuthKind::None,
    };
    let unused = |flag: &str, given: bool| -> Result<(), CliError> {
        if given {
            return Err(err(
                format!("{p}-{flag}"),
                format!("is not used with {p}-auth {kind:?}: drop it or change {p}-auth")
                    .to_lowercase(),
            ));
        }
        Ok(())
    };
    unused(
        "bearer-token-file",
        kind != AuthKind::Bearer && raw.bearer_file.is_some(),
    )?;
    unused(
        "basic-auth-username",
        kind != AuthKind::Basic && raw.username.is_some(),
    )?;
    unused(
        "basic-auth-password-file",
        kind != AuthKind::Basic && raw.password_file.is_some(),
    )?;
    unused(
        "azure-scope",
        kind != AuthKind::Azure && raw.scope.is_some(),
    )?;
    let credential = match kind {
        AuthKind::None => OutputCredential::None,
        AuthKind::Bearer => {
            OutputCredential::BearerFile(raw.bearer_file.clone().ok_or_else(|| {
                err(
                    format!("{p}-auth"),
                    format!("bearer needs {p}-bearer-token-file PATH"),
                )
            })?)
        }
        AuthKind::Basic => match (raw.username, raw.password_file) {
            (Some(u), Some(f)) if !u.is_empty() => OutputCredential::Basic {
                username: u.clone(),
                password_file: f.clone(),
            },
            _ => {
                return Err(err(
                    format!("{p}-auth"),
                    format!(
                        "basic needs {p}-basic-auth-username USER and {p}-basic-auth-password-file PATH"
                    ),
                ));
            }
        },
        AuthKind::Azure => {
            let scope = raw
                .scope
                .clone()
                .unwrap_or_else(|| DEFAULT_AZURE_SCOPE.into());
            if scope.trim().is_empty() || scope.contains(char::is_whitespace) {
                return Err(err(
                    format!("{p}-azure-scope"),
                    format!("{scope:?} is not a scope: use e.g. {DEFAULT_AZURE_SCOPE}"),
                ));
            }
            OutputCredential::Azure { scope }
        }
    };
    if credential != OutputCredential::None
        && let Some(h) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
    {
        return Err(err(
            format!("{p}-header"),
            format!(
                "{:?} would replace the {kind:?} credential's Authorization header: drop one",
                h.name
            )
            .to_lowercase(),
        ));
    }
    Ok(OutputAuthConfig {
        headers,
        credential,
    })
}

fn parse_headers(prefix: &'static str, items: &[String]) -> Result<Vec<OutputHeader>, CliError> {
    let flag = format!("{prefix}-header");
    let err = |reason: String| CliError::Invalid {
        flag: flag.clone(),
        reason,
    };
    let mut out: Vec<OutputHeader> = Vec::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        // Only the name is quoted back: the value may be a secret.
        let Some((name, value)) = item.split_once('=') else {
            return Err(err("expected NAME=VALUE or NAME=@/path/to/file".into()));
        };
        let name = name.trim();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(format!("{name:?} is not a valid HTTP header name")));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("grpc-") {
            return Err(err(format!(
                "{name:?} is set by the output itself and cannot be replaced"
            )));
        }
        if out.iter().any(|h| h.name.eq_ignore_ascii_case(name)) {
            return Err(err(format!("{name:?} is given twice: keep one")));
        }
        let value = match value.trim().strip_prefix('@') {
            Some(path) if !path.is_empty() => HeaderSource::File(PathBuf::from(path)),
            Some(_) => return Err(err(format!("{name:?}: @ must be followed by a file path"))),
            None => {
                if http::HeaderValue::from_str(value.trim()).is_err() {
                    return Err(err(format!(
                        "the value of {name:?} has characters HTTP forbids in a header"
                    )));
                }
                HeaderSource::Literal(value.trim().to_owned())
            }
        };
        out.push(OutputHeader {
            name: name.to_owned(),
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(
        headers: &'a [String],
        kind: Option<AuthKind>,
        bearer: &'a Option<PathBuf>,
        user: &'a Option<String>,
        password: &'a Option<PathBuf>,
        scope: &'a Option<String>,
    ) -> Raw<'a> {
        Raw {
            prefix: "--remote-write",
            headers,
            kind,
            bearer_file: bearer,
            username: user,
            password_file: password,
            scope,
        }
    }

    #[test]
    fn modes_are_inferred_or_checked() {
        let none = None;
        let (tok, user, pw) = (
            Some(PathBuf::from("/s/token")),
            Some("u".to_owned()),
            Some(PathBuf::from("/s/pw")),
        );
        let c = validate(raw(&[], None, &tok, &None, &none, &None)).unwrap();
        assert_eq!(
            c.credential,
            OutputCredential::BearerFile("/s/token".into())
        );
        let c = validate(raw(&[], None, &None, &user, &pw, &None)).unwrap();
        assert!(matches!(c.credential, OutputCredential::Basic { .. }));
        let c = validate(raw(&[], Some(AuthKind::Azure), &None, &None, &none, &None)).unwrap();
        assert_eq!(
            c.credential,
            OutputCredential::Azure {
                scope: DEFAULT_AZURE_SCOPE.into()
            }
        );
        for (bad, flag) in [
            (
                raw(&[], None, &tok, &user, &pw, &None),
                "--remote-write-bearer-token-file",
            ),
            (
                raw(&[], Some(AuthKind::Bearer), &None, &None, &none, &None),
                "--remote-write-auth",
            ),
            (
                raw(&[], Some(AuthKind::Basic), &None, &user, &none, &None),
                "--remote-write-auth",
            ),
            (
                raw(&[], None, &None, &None, &none, &Some("s".into())),
                "--remote-write-azure-scope",
            ),
            (
                raw(&[], Some(AuthKind::Azure), &tok, &None, &none, &None),
                "--remote-write-bearer-token-file",
            ),
        ] {
            let e = validate(bad).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }

    #[test]
    fn headers_parse_and_never_echo_values() {
        let items = vec![
            "X-Scope-OrgID=tenant-1".to_owned(),
            "X-Key=@/secrets/key".to_owned(),
        ];
        let h = parse_headers("--otlp", &items).unwrap();
        assert_eq!(h[0].value, HeaderSource::Literal("tenant-1".into()));
        assert_eq!(h[1].value, HeaderSource::File("/secrets/key".into()));
        for bad in [
            "novalue",
            "bad name=x",
            "Content-Type=text/plain",
            "grpc-timeout=1S",
            "X-A=@",
            "X-B=s3cret\u{7}",
        ] {
            let e = parse_headers("--otlp", &[bad.to_owned()])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--otlp-header"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let dup = vec!["X-A=1".to_owned(), "x-a=2".to_owned()];
        assert!(parse_headers("--otlp", &dup).is_err());
        let with_auth = vec!["Authorization=Bearer s3cret".to_owned()];
        let tok = Some(PathBuf::from("/t"));
        let e = validate(raw(&with_auth, None, &tok, &None, &None, &None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("authorization") && !e.contains("s3cret"), "{e}");
    }
}
