//! Extraction rules: which headers, parameters, cookies and body fields carry identities
//! and entities. Every list has a default that covers common APIs; a TOML file
//! (`[extract]` table of the agent's config) overrides any of them.

use serde::Deserialize;

/// The `[extract]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Key of the keyed fingerprint (any string, or `hex:` followed by 64 hex digits).
    /// The same key on every node gives the same fingerprint for the same secret. When
    /// absent, a random key is drawn at start (fingerprints then differ between runs).
    pub fingerprint_key: Option<String>,
    /// Trailing characters of a key or token kept in clear as a display hint (0: none).
    pub hint_chars: usize,
    /// Headers whose value is an API key.
    pub api_key_headers: Vec<String>,
    /// `Authorization` schemes whose credential is an API key.
    pub api_key_schemes: Vec<String>,
    /// Query parameters whose value is an API key.
    pub api_key_params: Vec<String>,
    /// Query parameters whose value is a bearer token.
    pub token_params: Vec<String>,
    /// Cookies that hold a session id.
    pub session_cookies: Vec<String>,
    /// Path fragments that mark a login endpoint (matched case-insensitively anywhere in
    /// the path).
    pub login_paths: Vec<String>,
    /// Body or query fields of a login request that hold the user name.
    pub login_user_fields: Vec<String>,
    /// JWT claims kept in clear.
    pub jwt_claims: Vec<String>,
    /// Keys that verify JWT signatures.
    pub jwt_keys: Vec<JwtKey>,
    /// A JWKS file (JSON) whose RSA keys verify RS256/384/512 tokens.
    pub jwks: Option<String>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` / `Forwarded` headers
    /// name the real client.
    pub trusted_proxies: Vec<String>,
    /// Query parameters that name business entities (the parameter name is the kind).
    pub entity_params: Vec<String>,
    /// JSON body fields that name business entities besides `id` and `*_id`.
    pub entity_fields: Vec<String>,
    /// Response fields that say who owns the returned object.
    pub owner_fields: Vec<String>,
    /// Most entities and owner hints kept per event.
    pub max_entities: usize,
    pub max_owners: usize,
    /// Most distinct endpoint templates learned; further paths are counted and logged
    /// under a coarse template.
    pub max_templates: usize,
    /// Distinct literal values at one path position before it becomes a parameter.
    pub template_cardinality: usize,
    /// An OpenAPI 3 file (JSON or YAML) whose paths are used before learned templates.
    pub openapi: Option<String>,
}

/// A key that verifies JWT signatures (HS256/384/512).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Only tokens whose header names this `kid` (any token when absent).
    pub kid: Option<String>,
    /// The shared secret of an HMAC key.
    pub secret: String,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            fingerprint_key: None,
            hint_chars: 4,
            api_key_headers: strings(&[
                "x-api-key",
                "api-key",
                "apikey",
                "x-api-token",
                "x-auth-token",
                "x-access-key",
            ]),
            api_key_schemes: strings(&["apikey", "api-key", "token", "key"]),
            api_key_params: strings(&["api_key", "apikey", "api-key", "key", "access_key"]),
            token_params: strings(&["access_token", "token", "auth"]),
            session_cookies: strings(&[
                "session",
                "sessionid",
                "session_id",
                "sid",
                "jsessionid",
                "phpsessid",
                "connect.sid",
                "asp.net_sessionid",
                "_session",
                "laravel_session",
                "rack.session",
            ]),
            login_paths: strings(&[
                "/login",
                "/signin",
                "/sign-in",
                "/sign_in",
                "/logon",
                "/oauth/token",
                "/oauth2/token",
                "/auth/",
                "/authenticate",
                "/session",
                "/token",
            ]),
            login_user_fields: strings(&[
                "username",
                "user_name",
                "user",
                "email",
                "login",
                "userid",
                "user_id",
                "account",
            ]),
            jwt_claims: strings(&[
                "sub",
                "tenant",
                "tenant_id",
                "org",
                "org_id",
                "tid",
                "client_id",
                "azp",
                "scope",
                "scp",
                "roles",
                "iss",
                "exp",
            ]),
            jwt_keys: Vec::new(),
            jwks: None,
            trusted_proxies: Vec::new(),
            entity_params: strings(&["customer", "customer_id", "account_id", "user_id"]),
            entity_fields: Vec::new(),
            owner_fields: strings(&[
                "tenant",
                "tenant_id",
                "org",
                "org_id",
                "organization_id",
                "account_id",
                "owner_id",
                "customer_id",
            ]),
            max_entities: 16,
            max_owners: 8,
            max_templates: 10_000,
            template_cardinality: 50,
            openapi: None,
        }
    }
}
