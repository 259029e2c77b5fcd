//! The Kusto client's `Authorization` header: no header, a token file, or an Azure AD token for the
//! cluster's scope, from the identities of [`crate::azure`].

use std::time::SystemTime;

use crate::azure::{AuthError, AzureChain, CachedToken, KustoAuth, TokenFile};

/// Where the client's `Authorization` header comes from.
pub(crate) enum Authenticator {
    None,
    File(TokenFile),
    Azure(CachedToken<AzureChain>),
}

impl Authenticator {
    pub(crate) fn new(
        auth: &KustoAuth,
        scope: String,
        transport: Option<azure_core::http::Transport>,
    ) -> Result<Authenticator, AuthError> {
        Ok(match auth {
            KustoAuth::None => Authenticator::None,
            KustoAuth::TokenFile(p) => Authenticator::File(TokenFile::new(p.clone())),
            azure => {
                Authenticator::Azure(CachedToken::new(AzureChain::new(azure, transport)?, scope))
            }
        })
    }

    /// The bearer token for the next request, or `None` for `--kusto-auth=none`.
    pub(crate) async fn bearer(&self) -> Result<Option<String>, AuthError> {
        match self {
            Authenticator::None => Ok(None),
            Authenticator::File(f) => f.token().await.map(Some),
            Authenticator::Azure(c) => c
                .token_at(SystemTime::now())
                .await
                .map(|t| Some(t.secret().to_owned()))
                .map_err(|detail| AuthError::NoToken {
                    mode: c.describe(),
                    detail,
                }),
        }
    }

    /// The identity in use, for 401/403 messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Authenticator::None => "none (no Authorization header sent)".into(),
            Authenticator::File(f) => format!("token-file:{}", f.path().display()),
            Authenticator::Azure(c) => c.describe(),
        }
    }
}
