//! Azure AD identities and bearer tokens, shared by the Kusto client (`--kusto-auth`) and the outputs'
//! `--remote-write-auth azure` / `--otlp-auth azure`, each for its own scope: which identity to use,
//! getting a token, caching it, and the token file. A leaf: it knows nothing of Kusto or the sinks.
//!
//! Azure modes use `azure_identity` 1.x credentials with scope `{endpoint}/.default`; `auto` tries
//! workload identity, managed identity, client secret and Azure CLI in that order and then sticks to the
//! first that yielded a token. `token-file:PATH` re-reads the file whenever its mtime changes (tests,
//! sidecar-injected tokens). Tokens are cached here and refreshed [`REFRESH_EARLY`] before expiry, so a
//! query never waits for a token fetch while the cached one is fresh. Tokens are never logged: they live
//! in [`BearerToken`], whose `Debug` hides them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

/// Refresh a cached token this long before it expires.
pub(crate) const REFRESH_EARLY: Duration = Duration::from_secs(5 * 60);

/// How the exporter authenticates to Kusto (`--kusto-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KustoAuth {
    /// Workload identity, managed identity, client secret, Azure CLI: the first that yields a token.
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    AzureCli,
    /// No `Authorization` header (plain-http local engines such as duckdb-kql).
    None,
    /// The whole file (trimmed) is the token; re-read when its mtime changes.
    TokenFile(PathBuf),
}

/// A bad `--kusto-auth` value, or no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "unknown Kusto auth mode {0:?}: expected auto, workload-identity, managed-identity, client-secret, azure-cli, none or token-file:PATH"
    )]
    UnknownMode(String),

    #[error("Kusto auth mode {mode} is not usable: {detail}")]
    Unusable { mode: String, detail: String },

    #[error("cannot get a Kusto token ({mode}): {detail}")]
    NoToken { mode: String, detail: String },
}

impl AuthError {
    /// A misconfiguration stays broken until someone fixes it; a failed fetch may work next time.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, AuthError::NoToken { .. })
    }
}

impl KustoAuth {
    /// The mode to use for one endpoint: `auto` sends no token to a plain-`http://` endpoint (a local
    /// engine such as duckdb-kql; adx-mon did the same), since a bearer token must never cross the
    /// network unencrypted. Explicit modes are used as given.
    pub(crate) fn for_endpoint(&self, endpoint: &url::Url) -> KustoAuth {
        match self {
            KustoAuth::Auto if endpoint.scheme() == "http" => KustoAuth::None,
            other => other.clone(),
        }
    }
}

impl FromStr for KustoAuth {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Ok(match s {
            "auto" => KustoAuth::Auto,
            "workload-identity" => KustoAuth::WorkloadIdentity,
            "managed-identity" => KustoAuth::ManagedIdentity,
            "client-secret" => KustoAuth::ClientSecret,
            "azure-cli" => KustoAuth::AzureCli,
            "none" => KustoAuth::None,
            _ => match s.strip_prefix("token-file:") {
                Some(path) if !path.is_empty() => KustoAuth::TokenFile(PathBuf::from(path)),
                _ => return Err(AuthError::UnknownMode(s.to_owned())),
            },
        })
    }
}

impl fmt::Display for KustoAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KustoAuth::Auto => f.write_str("auto"),
            KustoAuth::WorkloadIdentity => f.write_str("workload-identity"),
            KustoAuth::ManagedIdentity => f.write_str("managed-identity"),
            KustoAuth::ClientSecret => f.write_str("client-secret"),
            KustoAuth::AzureCli => f.write_str("azure-cli"),
            KustoAuth::None => f.write_str("none"),
            KustoAuth::TokenFile(p) => write!(f, "token-file:{}", p.display()),
        }
    }
}

/// A token and when it stops working. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken {
    secret: String,
    pub expires_at: SystemTime,
}

impl BearerToken {
    pub fn new(secret: String, expires_at: SystemTime) -> BearerToken {
        BearerToken { secret, expires_at }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn is_fresh(&self, now: SystemTime) -> bool {
        now + REFRESH_EARLY < self.expires_at
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Something that can fetch a new token (an Azure credential, a chain of them, a test fake).
pub(crate) trait TokenFetch: Send + Sync {
    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<BearerToken, String>>;
    /// The identity in use, for error messages (e.g. `auto → managed-identity`).
    fn describe(&self) -> String;
}

/// Caches one fetcher's token and refreshes it [`REFRESH_EARLY`] before expiry.
pub(crate) struct CachedToken<F> {
    fetch: F,
    scope: String,
    cached: Mutex<Option<BearerToken>>,
}

impl<F: TokenFetch> CachedToken<F> {
    pub fn new(fetch: F, scope: String) -> Self {
        CachedToken {
            fetch,
            scope,
            cached: Mutex::new(None),
        }
    }

    /// The cached token when fresh at `now`, else a new one (one fetch at a time).
    pub(crate) async fn token_at(&self, now: SystemTime) -> Result<BearerToken, String> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| t.is_fresh(now)) {
            return Ok(t.clone());
        }
        let fresh = self.fetch.fetch(&self.scope).await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    pub fn describe(&self) -> String {
        self.fetch.describe()
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub(crate) fn fetcher(&self) -> &F {
        &self.fetch
    }
}

/// One named Azure credential.
struct AzureSource {
    mode: &'static str,
    credential: Arc<dyn TokenCredential>,
}

/// Azure credentials tried in order; after the first success only that one is used.
pub(crate) struct AzureChain {
    mode: KustoAuth,
    /// The HTTP transport token requests use (TLS settings), kept for [`AzureChain::renewed`].
    transport: Option<azure_core::http::Transport>,
    sources: Vec<AzureSource>,
    /// Credentials that could not even be built (missing env vars), reported when all others fail.
    unusable: Vec<String>,
    winner: AtomicUsize,
}

const NO_WINNER: usize = usize::MAX;

impl TokenFetch for AzureChain {
    fn fetch<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<BearerToken, String>> {
        Box::pin(async move {
            let winner = self.winner.load(Ordering::Relaxed);
            let mut failures = self.unusable.clone();
            for (i, source) in self.sources.iter().enumerate() {
                if winner != NO_WINNER && winner != i {
                    continue;
                }
                match source.credential.get_token(&[scope], None).await {
                    Ok(t) => {
                        self.winner.store(i, Ordering::Relaxed);
                        let expires_at = SystemTime::UNIX_EPOCH
                            + Duration::from_secs(t.expires_on.unix_timestamp().max(0) as u64);
                        return Ok(BearerToken::new(t.token.secret().to_owned(), expires_at));
                    }
                    Err(e) => failures.push(format!("{}: {e}", source.mode)),
                }
            }
            Err(failures.join("; "))
        })
    }

    fn describe(&self) -> String {
        let winner = self.winner.load(Ordering::Relaxed);
        let identity = std::env::var("AZURE_CLIENT_ID")
            .ok()
            .filter(|id| !id.is_empty())
            .map(|id| format!(" (AZURE_CLIENT_ID={id})"))
            .unwrap_or_default();
        match (self.mode == KustoAuth::Auto, self.sources.get(winner)) {
            (true, Some(s)) => format!("auto → {}{identity}", s.mode),
            _ => format!("{}{identity}", self.mode),
        }
    }
}

impl AzureChain {
    /// Builds the credentials for `mode` (an Azure mode); fails when none can be built. Token
    /// requests go through `transport` (TLS settings) when given, else azure_core's default client.
    pub fn new(
        mode: &KustoAuth,
        transport: Option<azure_core::http::Transport>,
    ) -> Result<AzureChain, AuthError> {
        crate::tls::install_crypto_provider();
        let wanted: &[&'static str] = match mode {
            KustoAuth::Auto => &[
                "workload-identity",
                "managed-identity",
                "client-secret",
                "azure-cli",
            ],
            KustoAuth::WorkloadIdentity => &["workload-identity"],
            KustoAuth::ManagedIdentity => &["managed-identity"],
            KustoAuth::ClientSecret => &["client-secret"],
            KustoAuth::AzureCli => &["azure-cli"],
            KustoAuth::None | KustoAuth::TokenFile(_) => &[],
        };
        let mut sources = Vec::new();
        let mut unusable = Vec::new();
        for name in wanted {
            match build_credential(name, client_options(&transport)) {
                Ok(credential) => sources.push(AzureSource {
                    mode: name,
                    credential,
                }),
                Err(detail) => unusable.push(format!("{name}: {detail}")),
            }
        }
        if sources.is_empty() {
            return Err(AuthError::Unusable {
                mode: mode.to_string(),
                detail: unusable.join("; "),
            });
        }
        Ok(AzureChain {
            mode: mode.clone(),
            transport,
            sources,
            unusable,
            winner: AtomicUsize::new(NO_WINNER),
        })
    }

    /// The same chain with new credential objects. `azure_identity` caches tokens inside each
    /// credential until 5 minutes before expiry and offers no way to skip that cache, so a token a
    /// receiver has just refused (401) can only be replaced by asking through a new credential.
    pub fn renewed(&self) -> Result<AzureChain, AuthError> {
        AzureChain::new(&self.mode, self.transport.clone())
    }
}

fn client_options(
    transport: &Option<azure_core::http::Transport>,
) -> azure_core::http::ClientOptions {
    azure_core::http::ClientOptions {
        transport: transport.clone(),
        ..Default::default()
    }
}

fn build_credential(
    name: &str,
    client_options: azure_core::http::ClientOptions,
) -> Result<Arc<dyn TokenCredential>, String> {
    use azure_identity::*;
    match name {
        "workload-identity" => {
            let missing = missing_env(&[
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
            ]);
            if !missing.is_empty() {
                return Err(format!(
                    "workload identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (set by the AKS webhook); missing: {}",
                    missing.join(", ")
                ));
            }
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                ..Default::default()
            };
            let c = WorkloadIdentityCredential::new(Some(options)).map_err(|e| e.to_string())?;
            Ok(c)
        }
        "managed-identity" => {
            let options = ManagedIdentityCredentialOptions {
                // An empty variable means unset (system-assigned), as for the other credentials.
                user_assigned_id: std::env::var("AZURE_CLIENT_ID")
                    .ok()
                    .filter(|id| !id.is_empty())
                    .map(UserAssignedId::ClientId),
                client_options,
            };
            let c = ManagedIdentityCredential::new(Some(options)).map_err(|e| e.to_string())?;
            Ok(c)
        }
        "client-secret" => {
            let missing =
                missing_env(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]);
            if !missing.is_empty() {
                return Err(format!(
                    "client-secret needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET; missing: {}",
                    missing.join(", ")
                ));
            }
            let var = |k: &str| std::env::var(k).unwrap_or_default();
            let c = ClientSecretCredential::new(
                &var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_ID"),
                var("AZURE_CLIENT_SECRET").into(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| e.to_string())?;
            Ok(c)
        }
        "azure-cli" => {
            let c = AzureCliCredential::new(None).map_err(|e| e.to_string())?;
            Ok(c)
        }
        other => Err(format!("{other} is not an Azure credential")),
    }
}

fn missing_env(names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| std::env::var_os(n).is_none_or(|v| v.is_empty()))
        .collect()
}

/// The token file and the mtime of the copy we hold.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, String)>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> TokenFile {
        TokenFile {
            path,
            cached: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file's token, re-read only when its mtime changed since the last read.
    pub async fn token(&self) -> Result<String, AuthError> {
        let no_token = |detail: String| AuthError::NoToken {
            mode: format!("token-file:{}", self.path.display()),
            detail,
        };
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| no_token(format!("cannot stat the token file: {e}")))?;
        let mtime = meta
            .modified()
            .map_err(|e| no_token(format!("no mtime: {e}")))?;
        let mut cached = self.cached.lock().await;
        if let Some((seen, token)) = cached.as_ref()
            && *seen == mtime
        {
            return Ok(token.clone());
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| no_token(format!("cannot read the token file: {e}")))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(no_token("the token file is empty".into()));
        }
        *cached = Some((mtime, token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_sends_no_token_over_plain_http() {
        let http = url::Url::parse("http://127.0.0.1:31415").unwrap();
        let https = url::Url::parse("https://c.kusto.windows.net").unwrap();
        assert_eq!(KustoAuth::Auto.for_endpoint(&http), KustoAuth::None);
        assert_eq!(KustoAuth::Auto.for_endpoint(&https), KustoAuth::Auto);
        assert_eq!(KustoAuth::AzureCli.for_endpoint(&http), KustoAuth::AzureCli);
    }
    use std::sync::atomic::AtomicU32;

    #[test]
    fn parses_every_mode_and_rejects_others() {
        for (s, want) in [
            ("auto", KustoAuth::Auto),
            ("workload-identity", KustoAuth::WorkloadIdentity),
            ("managed-identity", KustoAuth::ManagedIdentity),
            ("client-secret", KustoAuth::ClientSecret),
            ("azure-cli", KustoAuth::AzureCli),
            ("none", KustoAuth::None),
            ("token-file:/t/tok", KustoAuth::TokenFile("/t/tok".into())),
        ] {
            let got: KustoAuth = s.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), s);
        }
        for bad in ["", "token-file:", "msi", "Auto"] {
            assert!(matches!(
                bad.parse::<KustoAuth>(),
                Err(AuthError::UnknownMode(_))
            ));
        }
    }

    struct Fake {
        calls: AtomicU32,
        lifetime: Duration,
    }

    impl TokenFetch for Fake {
        fn fetch<'a>(&'a self, _scope: &'a str) -> BoxFuture<'a, Result<BearerToken, String>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + self.lifetime;
            Box::pin(async move { Ok(BearerToken::new(format!("tok{n}"), exp)) })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    #[tokio::test]
    async fn cached_token_is_reused_until_refresh_margin() {
        let cache = CachedToken::new(
            Fake {
                calls: AtomicU32::new(0),
                lifetime: Duration::from_secs(3600),
            },
            "s".into(),
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(cache.token_at(t0).await.unwrap().secret(), "tok0");
        assert_eq!(
            cache
                .token_at(t0 + Duration::from_secs(3000))
                .await
                .unwrap()
                .secret(),
            "tok0"
        );
        assert_eq!(cache.fetch.calls.load(Ordering::SeqCst), 1);
        // Inside the last 5 minutes: refreshed.
        let late = t0 + Duration::from_secs(3600) - REFRESH_EARLY + Duration::from_secs(1);
        assert_eq!(cache.token_at(late).await.unwrap().secret(), "tok1");
        assert_eq!(cache.fetch.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_fetched_every_time() {
        let cache = CachedToken::new(
            Fake {
                calls: AtomicU32::new(0),
                lifetime: Duration::from_secs(60),
            },
            "s".into(),
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        cache.token_at(t0).await.unwrap();
        cache.token_at(t0).await.unwrap();
        assert_eq!(cache.fetch.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = BearerToken::new("s3cret".into(), SystemTime::UNIX_EPOCH);
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn token_file_is_reread_when_mtime_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "first\n").unwrap();
        let f = TokenFile::new(path.clone());
        assert_eq!(f.token().await.unwrap(), "first");
        // Same mtime: the cached copy is served even if the content changed underneath.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "second").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        assert_eq!(f.token().await.unwrap(), "first");
        file.set_modified(mtime + Duration::from_secs(5)).unwrap();
        assert_eq!(f.token().await.unwrap(), "second");
        std::fs::write(&path, "  ").unwrap();
        file.set_modified(mtime + Duration::from_secs(10)).unwrap();
        assert!(matches!(f.token().await, Err(AuthError::NoToken { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(
            f.token()
                .await
                .unwrap_err()
                .to_string()
                .contains("cannot stat")
        );
    }
}
