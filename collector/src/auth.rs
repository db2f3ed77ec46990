//! Who may use the web UI and the HTTP API: whoever holds the token `init` wrote to
//! `DATA/api_token` (readable by the collector's user only). Programs send it as
//! `Authorization: Bearer TOKEN`; a browser posts it once to `/login` and gets a session
//! cookie (HttpOnly, SameSite=Strict) derived from it, so the token itself never sits in
//! the browser. Every comparison takes the same time whatever the input.

use std::io::Write;
use std::path::Path;

/// The session cookie's name.
pub const COOKIE: &str = "tapline_session";
/// How long a browser session lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

#[derive(Clone)]
pub struct ApiToken {
    token: String,
    /// What the session cookie holds: a digest of the token, not the token.
    session: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

impl ApiToken {
    fn from_token(token: String) -> ApiToken {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("tapline-ui-session\0{token}").as_bytes(),
        );
        ApiToken {
            session: hex(d.as_ref()),
            token,
        }
    }

    /// Writes a new random token (`tpl_` and 64 hex digits) to `path`, mode 0600.
    pub fn create(path: &Path) -> std::io::Result<ApiToken> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| std::io::Error::other("no system randomness"))?;
        let token = format!("tpl_{}", hex(&secret));
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(ApiToken::from_token(token))
    }

    /// Reads the token at `path`, creating one when the data directory predates it.
    pub fn load_or_create(path: &Path) -> std::io::Result<(ApiToken, bool)> {
        match std::fs::read_to_string(path) {
            Ok(s) => {
                let t = s.trim();
                if t.len() < 16 {
                    return Err(std::io::Error::other(format!(
                        "{} holds no token (delete it to have a new one made)",
                        path.display()
                    )));
                }
                Ok((ApiToken::from_token(t.to_string()), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((ApiToken::create(path)?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `presented` is the token.
    pub fn is_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.trim().as_bytes(), self.token.as_bytes())
    }

    /// Whether `presented` is a session cookie value this token issued.
    pub fn is_session(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.session.as_bytes())
    }

    /// The session cookie a browser gets at login.
    pub fn session_cookie(&self, secure: bool) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
            self.session,
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The cookie that ends a session.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Compares in time that depends on the lengths only, not on where bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_sessions_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("tapline-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api_token");
        let _ = std::fs::remove_file(&path);
        let (t, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(created);
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(t.is_token(written.trim()));
        assert!(!t.is_token("tpl_0"));
        assert!(!t.is_token(""));
        assert!(!t.is_session(written.trim()), "the token is not a session");
        let c = t.session_cookie(false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        let value = cookie(&c, COOKIE).unwrap();
        assert!(t.is_session(value));
        let (again, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(!created);
        assert!(again.is_token(written.trim()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(cookie("a=1; tapline_session=xyz; b=2", COOKIE), Some("xyz"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
