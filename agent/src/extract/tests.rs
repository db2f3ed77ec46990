use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::decode::VlanIds;
use crate::http::{HttpConfig, HttpConnection, Side};

fn meta(client: [u8; 4]) -> FlowMeta {
    FlowMeta {
        flow_id: 7,
        client: (IpAddr::V4(Ipv4Addr::from(client)), 40_000),
        server: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 80)), 80),
        vlan: VlanIds::default(),
        first_ts: 1,
        midstream: false,
    }
}

fn tx(req: &str, resp: &str) -> Transaction {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(Side::Client, req.as_bytes(), 1_000, &mut out);
    c.data(Side::Server, resp.as_bytes(), 4_000, &mut out);
    c.finish(5_000, &mut out);
    out.remove(0)
}

fn extractor(f: impl FnOnce(&mut ExtractConfig)) -> Extractor {
    let mut c = ExtractConfig {
        fingerprint_key: Some("test key".into()),
        ..ExtractConfig::default()
    };
    f(&mut c);
    Extractor::new(c).unwrap()
}

const JWT_KEY: &str = "tapline-demo-jwt-key";

fn jwt(claims: &str) -> String {
    use hmac::Mac;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!(
        "{}.{}",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(claims)
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_KEY.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", e.encode(mac.finalize().into_bytes()))
}

fn kinds(e: &Event) -> Vec<ActorKind> {
    e.actors.iter().map(|a| a.kind).collect()
}

#[test]
fn jwt_bearer_with_claims_path_entities_and_owners() {
    let token =
        jwt(r#"{"sub":"usr_8a7F3k","tenant":"t_acme","scope":"invoices:read","email":"a@b.c"}"#);
    let t = tx(
        &format!(
            "GET /v1/customers/cus_8a7F3k/invoices/1042?expand=lines HTTP/1.1\r\nHost: API.example.com:8080\r\nAuthorization: Bearer {token}\r\nUser-Agent: sdk/1\r\n\r\n"
        ),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 70\r\n\r\n{\"id\":\"1042\",\"tenant\":\"t_acme\",\"customer_id\":\"cus_8a7F3k\",\"amount\":5}",
    );
    let mut x = extractor(|c| {
        c.jwt_keys = vec![JwtKey {
            kid: None,
            secret: JWT_KEY.into(),
        }]
    });
    let e = x.event(&meta([198, 51, 100, 7]), &t).unwrap();
    assert_eq!(e.endpoint, "/v1/customers/{customer}/invoices/{invoice}");
    assert_eq!(e.host.as_deref(), Some("api.example.com"));
    assert_eq!(e.status, Some(200));
    assert_eq!(e.latency_us, Some(3_000));
    assert_eq!(kinds(&e), [ActorKind::Jwt, ActorKind::ClientIp]);
    let a = &e.actors[0];
    assert_eq!(a.verified, Some(true));
    assert_eq!(
        a.claims,
        vec![
            ("sub".to_string(), "usr_8a7F3k".to_string()),
            ("tenant".to_string(), "t_acme".to_string()),
            ("scope".to_string(), "invoices:read".to_string())
        ],
        "only configured claims are kept"
    );
    assert_eq!(
        a.fingerprint,
        Some(x.fingerprinter().fingerprint(token.as_bytes()))
    );
    assert_eq!(e.actors[1].value.as_deref(), Some("198.51.100.7"));
    let ents: Vec<(&str, &str)> = e
        .entities
        .iter()
        .map(|en| (en.kind.as_str(), en.id.as_str()))
        .collect();
    assert_eq!(ents, [("customer", "cus_8a7F3k"), ("invoice", "1042")]);
    assert_eq!(
        e.owners,
        vec![
            Owner {
                field: "tenant".into(),
                value: "t_acme".into()
            },
            Owner {
                field: "customer_id".into(),
                value: "cus_8a7F3k".into()
            }
        ]
    );
    let json = serde_json::to_string(&e).unwrap();
    assert!(!json.contains(&token) && !json.contains(token.split('.').nth(2).unwrap()));
}

#[test]
fn api_keys_basic_cookies_and_a_login() {
    let t = tx(
        "GET /v1/charges?api_key=sk_live_abcdefghijklmnop&customer=cus_1 HTTP/1.1\r\nX-Api-Key: key_0123456789abcdef\r\nAuthorization: Basic YWxpY2U6czNjcjN0\r\nCookie: theme=dark; SESSIONID=f00dfeedf00dfeedf00d; sid=abc\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
    );
    let mut x = extractor(|_| {});
    let e = x.event(&meta([203, 0, 113, 9]), &t).unwrap();
    assert_eq!(
        kinds(&e),
        [
            ActorKind::Basic,
            ActorKind::ApiKey,
            ActorKind::ApiKey,
            ActorKind::Session,
            ActorKind::Session,
            ActorKind::ClientIp
        ]
    );
    assert_eq!(e.actors[0].value.as_deref(), Some("alice"));
    assert_eq!(e.actors[1].hint.as_deref(), Some("cdef"));
    assert_eq!(e.actors[4].hint, None, "too short to show a hint");
    assert_eq!(e.entities[0].kind, "customer");
    let json = serde_json::to_string(&e).unwrap();
    for secret in [
        "sk_live_abcdefghijklmnop",
        "key_0123456789abcdef",
        "s3cr3t",
        "f00dfeedf00dfeedf00d",
        "YWxpY2U6czNjcjN0",
    ] {
        assert!(!json.contains(secret), "{secret} leaked: {json}");
    }

    let mut login = |body: &str, ct: &str| {
        let t = tx(
            &format!(
                "POST /v1/auth/login HTTP/1.1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        );
        x.event(&meta([203, 0, 113, 9]), &t).unwrap()
    };
    let a = login(
        r#"{"username":"Alice@Acme.example","password":"pw1"}"#,
        "application/json",
    );
    let b = login(
        "email=alice%40acme.example&password=pw2",
        "application/x-www-form-urlencoded",
    );
    assert_eq!(a.actors[0].kind, ActorKind::Login);
    assert_eq!(
        a.actors[0].fingerprint, b.actors[0].fingerprint,
        "same user, normalised"
    );
    let json = serde_json::to_string(&a).unwrap();
    assert!(!json.contains("pw1") && !json.to_lowercase().contains("alice@acme"));
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let req = "GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4, 198.51.100.20, 10.9.0.2\r\n\r\n";
    let t = tx(req, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut x = extractor(|c| c.trusted_proxies = vec!["10.9.0.0/24".into()]);
    let ip = |e: Event| e.actors.last().unwrap().value.clone().unwrap();
    assert_eq!(
        ip(x.event(&meta([10, 9, 0, 1]), &t).unwrap()),
        "198.51.100.20"
    );
    // From an untrusted peer the header is not believed.
    assert_eq!(
        ip(x.event(&meta([203, 0, 113, 5]), &t).unwrap()),
        "203.0.113.5"
    );
    let t = tx(
        "GET / HTTP/1.1\r\nForwarded: for=\"[2001:db8::1]:4711\";proto=http\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        ip(x.event(&meta([10, 9, 0, 1]), &t).unwrap()),
        "2001:db8::1"
    );
    assert!(
        Extractor::new(ExtractConfig {
            trusted_proxies: vec!["nonsense".into()],
            ..ExtractConfig::default()
        })
        .is_err()
    );
}

#[test]
fn hostile_requests_are_bounded() {
    let mut x = extractor(|_| {});
    let giant = format!("eyJ{}.{}.{}", "A".repeat(20_000), "B".repeat(10), "C");
    let deep = "[".repeat(50_000);
    let many_ids: String = (0..5000).map(|i| format!("{{\"id\":\"x{i}\"}},")).collect();
    let body = format!("[{many_ids}{deep}");
    let t = tx(
        &format!(
            "POST /v1/{} HTTP/1.1\r\nAuthorization: Bearer {giant}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            "seg/".repeat(500),
            body.len()
        ),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let e = x.event(&meta([1, 1, 1, 1]), &t).unwrap();
    assert_eq!(
        e.actors[0].kind,
        ActorKind::Bearer,
        "a giant JWT is an opaque bearer"
    );
    assert!(e.entities.len() <= 16);
    assert!(x.stats.capped > 0);
    assert!(e.endpoint.len() < 200);
    for i in 0..100_000 {
        let t = tx(
            &format!("GET /p{i}/q HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        x.event(&meta([1, 1, 1, 1]), &t);
    }
    assert!(x.templates.len() <= x.config.max_templates);
}
