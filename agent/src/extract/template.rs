//! Endpoint templates learned online: `/v1/customers/cus_8a7F3k/invoices/1042` becomes
//! `/v1/customers/{customer}/invoices/{invoice}`. A segment is a parameter when its shape
//! says it is an id (number, UUID, hex, prefixed id, high-entropy string, e-mail), or when
//! the position has seen more distinct values than a literal position plausibly has. The
//! parameter is named after the literal segment before it. Paths declared in an OpenAPI 3
//! file are matched first. The learned table is bounded; paths that do not fit are
//! counted and given a coarse template.

use std::collections::HashMap;

/// Longest path looked at, and most segments templated.
pub const MAX_PATH: usize = 2048;
pub const MAX_SEGMENTS: usize = 32;

/// One templated path: the template and the parameters with their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templated {
    pub template: String,
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<String, Node>,
    param: Option<Box<Node>>,
    /// Too many distinct literals were seen here: every segment is a parameter.
    saturated: bool,
}

#[derive(Debug, Clone)]
enum ApiSegment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
struct ApiPath {
    template: String,
    segments: Vec<ApiSegment>,
    literals: usize,
}

#[derive(Debug)]
pub struct Templater {
    root: Node,
    nodes: usize,
    max_nodes: usize,
    cardinality: usize,
    declared: Vec<ApiPath>,
    /// Paths whose new segments did not fit in the table.
    pub overflow: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("not JSON or YAML: {0}")]
    Parse(String),
    #[error("no `paths` object")]
    NoPaths,
}

impl Templater {
    pub fn new(max_templates: usize, cardinality: usize) -> Self {
        Templater {
            root: Node::default(),
            nodes: 0,
            max_nodes: max_templates.max(1),
            cardinality: cardinality.max(2),
            declared: Vec::new(),
            overflow: 0,
        }
    }

    /// Adds the paths of an OpenAPI 3 document (JSON or YAML text).
    pub fn add_openapi(&mut self, text: &str) -> Result<usize, OpenApiError> {
        let doc: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                serde_yaml_ng::from_str(text).map_err(|e| OpenApiError::Parse(e.to_string()))?
            }
        };
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or(OpenApiError::NoPaths)?;
        for path in paths.keys() {
            let segments: Vec<ApiSegment> = split(path)
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => ApiSegment::Param(param_kind(name)),
                        None => ApiSegment::Literal(s.to_string()),
                    },
                )
                .collect();
            let template = std::iter::once(String::new())
                .chain(segments.iter().map(|s| match s {
                    ApiSegment::Literal(l) => l.clone(),
                    ApiSegment::Param(p) => format!("{{{p}}}"),
                }))
                .collect::<Vec<_>>()
                .join("/");
            let literals = segments
                .iter()
                .filter(|s| matches!(s, ApiSegment::Literal(_)))
                .count();
            self.declared.push(ApiPath {
                template,
                segments,
                literals,
            });
        }
        // Most specific first: more literal segments win.
        self.declared.sort_by_key(|a| std::cmp::Reverse(a.literals));
        Ok(paths.len())
    }

    /// The template of a request path (without its query).
    pub fn template(&mut self, path: &str) -> Templated {
        let path = &path[..floor_boundary(path, MAX_PATH)];
        let segs: Vec<&str> = split(path).take(MAX_SEGMENTS).collect();
        if let Some(t) = self.match_declared(&segs) {
            return t;
        }
        let mut out = Templated {
            template: String::with_capacity(path.len()),
            params: Vec::new(),
        };
        let mut node = &mut self.root;
        let mut prev_literal: Option<&str> = None;
        let mut full = false;
        for seg in &segs {
            out.template.push('/');
            let by_shape = is_id_like(seg);
            let mut literal = !by_shape && !node.saturated && !full;
            if literal && !node.literals.contains_key(*seg) {
                if node.literals.len() >= self.cardinality {
                    node.saturated = true;
                    literal = false;
                } else if self.nodes >= self.max_nodes {
                    self.overflow += 1;
                    full = true;
                    literal = false;
                } else {
                    self.nodes += 1;
                    node.literals.insert(seg.to_string(), Node::default());
                }
            }
            if literal {
                let next = node.literals.entry(seg.to_string()).or_default();
                node = next;
                out.template.push_str(seg);
                prev_literal = Some(seg);
                continue;
            }
            if full {
                out.template.push_str("{*}");
                continue;
            }
            let name = prev_literal.map_or_else(|| "id".to_string(), singular);
            out.template.push('{');
            out.template.push_str(&name);
            out.template.push('}');
            out.params.push((name, seg.to_string()));
            node = node.param.get_or_insert_with(Box::default);
            prev_literal = None;
        }
        if out.template.is_empty() {
            out.template.push('/');
        }
        out
    }

    fn match_declared(&self, segs: &[&str]) -> Option<Templated> {
        let api = self.declared.iter().find(|a| {
            a.segments.len() == segs.len()
                && a.segments.iter().zip(segs).all(|(a, s)| match a {
                    ApiSegment::Literal(l) => l == s,
                    ApiSegment::Param(_) => !s.is_empty(),
                })
        })?;
        Some(Templated {
            template: api.template.clone(),
            params: api
                .segments
                .iter()
                .zip(segs)
                .filter_map(|(a, s)| match a {
                    ApiSegment::Param(p) => Some((p.clone(), s.to_string())),
                    ApiSegment::Literal(_) => None,
                })
                .collect(),
        })
    }

    /// Number of learned path nodes.
    pub fn len(&self) -> usize {
        self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// An OpenAPI parameter name as an entity kind: `customerId`, `customer_id` → `customer`.
fn param_kind(name: &str) -> String {
    let n = name
        .strip_suffix("_id")
        .or_else(|| name.strip_suffix("Id"))
        .or_else(|| name.strip_suffix("ID"))
        .filter(|n| !n.is_empty())
        .unwrap_or(name);
    n.to_ascii_lowercase()
}

/// `customers` → `customer`, `categories` → `category`.
pub fn singular(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if let Some(stem) = w.strip_suffix("ies") {
        format!("{stem}y")
    } else if w.ends_with("ss") {
        w
    } else if let Some(stem) = w.strip_suffix('s') {
        stem.to_string()
    } else {
        w
    }
}

/// Whether a path segment is an identifier rather than a fixed name.
pub fn is_id_like(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    if is_uuid(b) || s.contains('@') {
        return true;
    }
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    if hex && b.len() >= 8 && digits > 0 {
        return true;
    }
    // Prefixed ids: cus_8a7F3k, inv-00042, ch_3MmlLr.
    if let Some(i) = b.iter().position(|&c| c == b'_' || c == b'-')
        && (1..=8).contains(&i)
        && b[..i].iter().all(u8::is_ascii_alphabetic)
    {
        let rest = &b[i + 1..];
        let mixed = rest.iter().any(u8::is_ascii_digit)
            || (rest.iter().any(u8::is_ascii_uppercase) && rest.iter().any(u8::is_ascii_lowercase));
        if rest.len() >= 4 && rest.iter().all(u8::is_ascii_alphanumeric) && mixed {
            return true;
        }
    }
    // Long strings of letters and digits mixed: tokens, hashes, base64 ids.
    b.len() >= 16 && digits > 0 && b.iter().any(u8::is_ascii_alphabetic)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for id in [
            "1042",
            "cus_8a7F3k",
            "inv_0000abcd",
            "5f0c6e1e-8b7a-4c3e-9d2f-0a1b2c3d4e5f",
            "deadbeef01",
            "alice@example.com",
            "aGVsbG8gd29ybGQgMTIz",
        ] {
            assert!(is_id_like(id), "{id}");
        }
        for lit in ["v1", "customers", "me", "sign-in", "user_profile", "health"] {
            assert!(!is_id_like(lit), "{lit}");
        }
    }

    #[test]
    fn learned_templates() {
        let mut t = Templater::new(100, 5);
        let a = t.template("/v1/customers/cus_8a7F3k/invoices/1042");
        assert_eq!(a.template, "/v1/customers/{customer}/invoices/{invoice}");
        assert_eq!(
            a.params,
            vec![
                ("customer".to_string(), "cus_8a7F3k".to_string()),
                ("invoice".to_string(), "1042".to_string())
            ]
        );
        assert_eq!(t.template("/v1/users/me").template, "/v1/users/me");
        assert_eq!(t.template("/").template, "/");
        // Plain words at one position: literal until there are too many of them.
        for name in ["alpha", "bravo", "charlie", "delta", "echo"] {
            assert_eq!(
                t.template(&format!("/files/{name}")).template,
                format!("/files/{name}")
            );
        }
        assert_eq!(t.template("/files/foxtrot").template, "/files/{file}");
        assert_eq!(t.template("/files/golf").template, "/files/{file}");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Templater::new(50, 1_000_000);
        for i in 0..10_000 {
            let p = format!("/a{i}/b");
            let got = t.template(&p);
            assert!(got.template.starts_with('/'));
        }
        assert!(t.len() <= 50);
        assert!(t.overflow > 0);
        let long = "/x".repeat(100_000);
        assert!(t.template(&long).template.len() <= MAX_SEGMENTS * 4 + 1);
    }

    #[test]
    fn openapi_paths_come_first() {
        let mut t = Templater::new(100, 50);
        let n = t
            .add_openapi(
                "openapi: 3.0.0\npaths:\n  /v1/accounts/{accountId}/keys/{keyName}: {}\n  /v1/accounts/me/keys/{keyName}: {}\n",
            )
            .unwrap();
        assert_eq!(n, 2);
        let a = t.template("/v1/accounts/acme/keys/primary");
        assert_eq!(a.template, "/v1/accounts/{account}/keys/{keyname}");
        assert_eq!(a.params[0], ("account".to_string(), "acme".to_string()));
        assert_eq!(
            t.template("/v1/accounts/me/keys/primary").template,
            "/v1/accounts/me/keys/{keyname}"
        );
    }
}
