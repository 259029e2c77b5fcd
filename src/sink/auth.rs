//! Who an output says it is: extra headers (literal, or read from a file so secrets stay in mounted
//! Secrets) and at most one credential — a bearer token file, basic auth with a password file, or an
//! Azure AD token for a scope (Azure Monitor by default). [`OutputAuthConfig`] is the plain settings
//! value any output takes (remote write, OTLP/HTTP, OTLP/gRPC); [`OutputAuth`] is its
//! runtime form, asked for the headers of every request.
//!
//! Invariants:
//! - Files (bearer token, password, `@/path` header values) are re-read whenever their mtime changes,
//!   so a rotated Secret is picked up without a restart; surrounding whitespace is trimmed.
//! - Azure tokens come from the same credential chain as Kusto's (`crate::azure`: workload
//!   identity, managed identity, client secret, Azure CLI), are cached and refreshed 5 minutes before
//!   expiry. After a 401 the output calls [`OutputAuth::renew`], which asks a new credential for a new
//!   token; the request is retried once, and a second 401 is permanent.
//! - Secret values never leave this module except inside the request headers, which are marked
//!   sensitive; `Debug`, errors and [`OutputAuth::describe`] name identities, scopes and paths only.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::RwLock;

use crate::azure::{AuthError, AzureChain, CachedToken, KustoAuth, TokenFile};
use crate::tls::TlsConfig;

/// The scope Azure Monitor workspaces (managed Prometheus ingestion) expect.
pub(crate) const DEFAULT_AZURE_SCOPE: &str = "https://monitor.azure.com/.default";

/// Where an extra header's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Literal(String),
    /// `@/path`: the file's content, trimmed, re-read when it changes.
    File(PathBuf),
}

impl fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A literal may still be a secret (someone's `Authorization=...`): never printed.
            HeaderSource::Literal(v) => write!(f, "Literal(<{} bytes>)", v.len()),
            HeaderSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// One `--remote-write-header` / `--otlp-header` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputHeader {
    pub name: String,
    pub value: HeaderSource,
}

/// The one credential an output sends in `Authorization`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutputCredential {
    #[default]
    None,
    /// `Authorization: Bearer <file content>`.
    BearerFile(PathBuf),
    /// `Authorization: Basic base64(username:<file content>)`.
    Basic {
        username: String,
        password_file: PathBuf,
    },
    /// `Authorization: Bearer <Azure AD token for scope>`.
    Azure { scope: String },
}

/// An output's authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputAuthConfig {
    pub headers: Vec<OutputHeader>,
    pub credential: OutputCredential,
}

impl OutputAuthConfig {
    /// Whether requests carry something secret (so plain `http://` deserves a warning).
    pub(crate) fn sends_secrets(&self) -> bool {
        self.credential != OutputCredential::None
            || (self.headers.iter()).any(|h| matches!(h.value, HeaderSource::File(_)))
    }

    /// Logs a warning at start-up when credentials would cross the network unencrypted.
    pub(crate) fn warn_if_plaintext(&self, output: &'static str, endpoint: &url::Url) {
        if endpoint.scheme() == "http" && self.sends_secrets() {
            tracing::warn!(
                output,
                endpoint = %endpoint,
                "credentials go to a plain http:// endpoint unencrypted: use https://"
            );
        }
    }
}

/// Why an output's credentials could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum OutputAuthError {
    #[error("{output} output: header {name:?}: {detail}")]
    Header {
        output: &'static str,
        name: String,
        detail: String,
    },
    #[error("{output} output: Azure authentication is not usable: {detail}")]
    AzureUnusable {
        output: &'static str,
        detail: String,
    },
    #[error("{output} output: cannot get the {what}: {detail}")]
    NoCredentials {
        output: &'static str,
        what: String,
        detail: String,
    },
}

/// A header value from a file, read on demand.
enum HeaderValueSource {
    Fixed(HeaderValue),
    File(TokenFile),
}

enum Credential {
    None,
    Bearer(TokenFile),
    Basic {
        username: String,
        password: TokenFile,
    },
    Azure(RwLock<AzureState>),
}

/// The current Azure credential chain and how many times it was renewed.
struct AzureState {
    generation: u64,
    cache: Arc<CachedToken<AzureChain>>,
}

/// Auth headers for one request, and which credential generation produced them (for
/// [`OutputAuth::renew`]).
pub(crate) struct AuthHeaders {
    pub headers: HeaderMap,
    pub generation: u64,
}

/// The runtime form of [`OutputAuthConfig`]: produces each request's auth headers.
pub(crate) struct OutputAuth {
    output: &'static str,
    headers: Vec<(HeaderName, HeaderValueSource)>,
    credential: Credential,
}

impl fmt::Debug for OutputAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputAuth")
            .field("output", &self.output)
            .field("credential", &self.describe())
            .finish_non_exhaustive()
    }
}

impl OutputAuth {
    /// Validates header names and literal values and builds the Azure credential chain (whose
    /// token requests use `tls`).
    pub fn new(
        output: &'static str,
        config: &OutputAuthConfig,
        tls: &TlsConfig,
    ) -> Result<OutputAuth, OutputAuthError> {
        let mut headers = Vec::new();
        for h in &config.headers {
            let bad = |detail: String| OutputAuthError::Header {
                output,
                name: h.name.clone(),
                detail,
            };
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| bad("not a valid HTTP header name".into()))?;
            let value = match &h.value {
                HeaderSource::Literal(v) => HeaderValueSource::Fixed(
                    sensitive(v)
                        .map_err(|_| bad("the value has characters HTTP forbids".into()))?,
                ),
                HeaderSource::File(p) => HeaderValueSource::File(TokenFile::new(p.clone())),
            };
            headers.push((name, value));
        }
        let credential = match &config.credential {
            OutputCredential::None => Credential::None,
            OutputCredential::BearerFile(p) => Credential::Bearer(TokenFile::new(p.clone())),
            OutputCredential::Basic {
                username,
                password_file,
            } => Credential::Basic {
                username: username.clone(),
                password: TokenFile::new(password_file.clone()),
            },
            OutputCredential::Azure { scope } => {
                let unusable = |detail: String| OutputAuthError::AzureUnusable { output, detail };
                let transport = tls.azure_transport().map_err(|e| unusable(e.to_string()))?;
                let chain = AzureChain::new(&KustoAuth::Auto, Some(transport)).map_err(|e| {
                    unusable(match e {
                        AuthError::Unusable { detail, .. } => detail,
                        other => other.to_string(),
                    })
                })?;
                Credential::Azure(RwLock::new(AzureState {
                    generation: 0,
                    cache: Arc::new(CachedToken::new(chain, scope.clone())),
                }))
            }
        };
        Ok(OutputAuth {
            output,
            headers,
            credential,
        })
    }

    /// The extra headers and `Authorization` for the next request, all marked sensitive.
    pub async fn headers(&self) -> Result<AuthHeaders, OutputAuthError> {
        let mut generation = 0;
        let headers = self.header_map(&mut generation).await?;
        Ok(AuthHeaders {
            headers,
            generation,
        })
    }

    async fn header_map(&self, generation: &mut u64) -> Result<HeaderMap, OutputAuthError> {
        let mut out = HeaderMap::new();
        for (name, source) in &self.headers {
            let value = match source {
                HeaderValueSource::Fixed(v) => v.clone(),
                HeaderValueSource::File(f) => {
                    let what = || format!("value of header {name} from {}", f.path().display());
                    let text = self.read(f, what).await?;
                    sensitive(&text).map_err(|_| {
                        self.no_credentials(
                            what(),
                            "the file has characters HTTP forbids in a header",
                        )
                    })?
                }
            };
            out.insert(name.clone(), value);
        }
        let authorization = match &self.credential {
            Credential::None => return Ok(out),
            Credential::Bearer(f) => {
                let what = || format!("bearer token from {}", f.path().display());
                format!("Bearer {}", self.read(f, what).await?)
            }
            Credential::Basic { username, password } => {
                let what = || format!("basic-auth password from {}", password.path().display());
                let password = self.read(password, what).await?;
                let pair = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                format!("Basic {pair}")
            }
            Credential::Azure(state) => {
                let cache = {
                    let state = state.read().await;
                    *generation = state.generation;
                    state.cache.clone()
                };
                let token = cache.token_at(SystemTime::now()).await.map_err(|detail| {
                    self.no_credentials(
                        format!("Azure token ({})", describe_azure(&cache)),
                        &detail,
                    )
                })?;
                format!("Bearer {}", token.secret())
            }
        };
        let value = sensitive(&authorization).map_err(|_| {
            self.no_credentials(
                self.describe(),
                "the credential has characters HTTP forbids in a header",
            )
        })?;
        out.insert(AUTHORIZATION, value);
        Ok(out)
    }

    /// After a 401 (gRPC: `UNAUTHENTICATED`, given as `why`) to a request sent with credential
    /// generation `refused`: gets a new Azure token
    /// through new credential objects (see [`AzureChain::renewed`]), unless a concurrent push
    /// already did. Returns whether a retry can send a different credential; files are re-read on
    /// every request anyway, so for them a retry would repeat the refused request.
    pub(crate) async fn renew(&self, refused: u64, why: &str) -> bool {
        let Credential::Azure(state) = &self.credential else {
            return false;
        };
        let mut state = state.write().await;
        if state.generation != refused {
            return true;
        }
        match state.cache.fetcher().renewed() {
            Ok(chain) => {
                tracing::info!(
                    output = self.output,
                    identity = %describe_azure(&state.cache),
                    "the receiver refused the Azure token ({why}): getting a new one and retrying once"
                );
                let scope = state.cache.scope().to_owned();
                state.cache = Arc::new(CachedToken::new(chain, scope));
                state.generation += 1;
                true
            }
            Err(e) => {
                tracing::warn!(
                    output = self.output,
                    "cannot renew the Azure credential: {e}"
                );
                false
            }
        }
    }

    /// The identity in use, for messages: never a secret.
    pub fn describe(&self) -> String {
        match &self.credential {
            Credential::None => "no credentials".into(),
            Credential::Bearer(f) => format!("the bearer token from {}", f.path().display()),
            Credential::Basic { username, password } => format!(
                "basic auth as {username:?} (password from {})",
                password.path().display()
            ),
            Credential::Azure(state) => match state.try_read() {
                Ok(s) => describe_azure(&s.cache),
                Err(_) => "an Azure identity being renewed".into(),
            },
        }
    }

    async fn read(
        &self,
        file: &TokenFile,
        what: impl Fn() -> String,
    ) -> Result<String, OutputAuthError> {
        file.token().await.map_err(|e| {
            let detail = match e {
                AuthError::NoToken { detail, .. } => detail,
                other => other.to_string(),
            };
            self.no_credentials(what(), &detail)
        })
    }

    fn no_credentials(&self, what: String, detail: &str) -> OutputAuthError {
        OutputAuthError::NoCredentials {
            output: self.output,
            what,
            detail: detail.to_owned(),
        }
    }
}

fn describe_azure(cache: &CachedToken<AzureChain>) -> String {
    format!(
        "Azure identity {} for scope {}",
        cache.describe(),
        cache.scope()
    )
}

fn sensitive(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(value)?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(config: OutputAuthConfig) -> OutputAuth {
        OutputAuth::new("remote_write", &config, &TlsConfig::default()).unwrap()
    }

    #[tokio::test]
    async fn headers_bearer_and_basic_are_built_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = dir.path().join("tenant");
        std::fs::write(&tenant, "team-a\n").unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0psecret\n").unwrap();
        let a = auth(OutputAuthConfig {
            headers: vec![
                OutputHeader {
                    name: "X-Scope-OrgID".into(),
                    value: HeaderSource::File(tenant),
                },
                OutputHeader {
                    name: "x-env".into(),
                    value: HeaderSource::Literal("prod".into()),
                },
            ],
            credential: OutputCredential::BearerFile(token.clone()),
        });
        let h = a.headers().await.unwrap().headers;
        assert_eq!(h["x-scope-orgid"], "team-a");
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h[AUTHORIZATION], "Bearer t0psecret");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(!format!("{a:?}").contains("t0psecret"));
        assert!(
            !a.renew(0, "401").await,
            "a file credential cannot be renewed by retrying"
        );

        let password = dir.path().join("password");
        std::fs::write(&password, "pa55").unwrap();
        let b = auth(OutputAuthConfig {
            headers: vec![],
            credential: OutputCredential::Basic {
                username: "user".into(),
                password_file: password,
            },
        });
        // base64("user:pa55")
        assert_eq!(
            b.headers().await.unwrap().headers[AUTHORIZATION],
            "Basic dXNlcjpwYTU1"
        );
    }

    #[tokio::test]
    async fn missing_files_and_bad_headers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(OutputAuthConfig {
            headers: vec![],
            credential: OutputCredential::BearerFile(dir.path().join("absent")),
        });
        let err = a.headers().await.err().unwrap().to_string();
        assert!(
            err.contains("remote_write output") && err.contains("absent"),
            "{err}"
        );

        let err = OutputAuth::new(
            "otlp",
            &OutputAuthConfig {
                headers: vec![OutputHeader {
                    name: "bad header".into(),
                    value: HeaderSource::Literal("v".into()),
                }],
                credential: OutputCredential::None,
            },
            &TlsConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"bad header\""), "{err}");
    }

    #[test]
    fn debug_never_shows_literal_values() {
        let h = OutputHeader {
            name: "Authorization".into(),
            value: HeaderSource::Literal("Bearer s3cret".into()),
        };
        assert!(!format!("{h:?}").contains("s3cret"));
    }
}
