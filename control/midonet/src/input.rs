//! Reading request bodies as MidoNet's clients write them: midonet-cli
//! sends numbers as strings (`"networkLength":"24"`), NAT ports as numbers,
//! and unset fields as `null` or not at all. Every reader names the field
//! it could not read.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::ids::Uuid;

/// A JSON object from a request body.
pub struct Body(pub Map<String, Value>);

impl Body {
    pub fn parse(bytes: &[u8]) -> ApiResult<Body> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Body(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Ok(Body(m)),
            Ok(_) => Err(ApiError::bad("the request body must be a JSON object")),
            Err(e) => Err(ApiError::bad(format!("the request body is not JSON: {e}"))),
        }
    }

    /// The field, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::field(key, "must be a string")),
        }
    }

    /// A string that is not empty (`""` counts as unset, as the cli sends
    /// `"tenantId": ""`).
    pub fn text(&self, key: &str) -> ApiResult<Option<String>> {
        Ok(self.str(key)?.filter(|s| !s.is_empty()))
    }

    pub fn u64(&self, key: &str) -> ApiResult<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => number(v)
                .map(Some)
                .ok_or_else(|| ApiError::field(key, format!("`{v}` is not a whole number"))),
        }
    }

    pub fn u32_max(&self, key: &str, max: u64) -> ApiResult<Option<u64>> {
        match self.u64(key)? {
            Some(n) if n > max => Err(ApiError::field(key, format!("{n} is over {max}"))),
            n => Ok(n),
        }
    }

    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::field(key, format!("`{v}` is not true or false"))),
        }
    }

    pub fn flag(&self, key: &str) -> ApiResult<bool> {
        Ok(self.bool(key)?.unwrap_or(false))
    }

    pub fn ip(&self, key: &str) -> ApiResult<Option<Ipv4Addr>> {
        match self.text(key)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::field(
                    key,
                    format!(
                        "`{}` is not an IPv4 address (vnet routes IPv4 only)",
                        s.escape_debug()
                    ),
                )
            }),
        }
    }

    pub fn uuid(&self, key: &str) -> ApiResult<Option<Uuid>> {
        match self.text(key)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| ApiError::field(key, e)),
        }
    }

    pub fn array(&self, key: &str) -> ApiResult<&[Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(ApiError::field(key, "must be a list")),
        }
    }

    pub fn uuids(&self, key: &str) -> ApiResult<Vec<Uuid>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| ApiError::field(key, "must be a list of UUIDs"))?
                    .parse()
                    .map_err(|e| ApiError::field(key, e))
            })
            .collect()
    }

    /// A nested object (`tpDst: {start, end}`).
    pub fn object(&self, key: &str) -> ApiResult<Option<Body>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Body(m.clone()))),
            Some(_) => Err(ApiError::field(key, "must be an object")),
        }
    }
}

/// A whole number given as a JSON number or a string of digits.
pub fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_the_clients_send_them() {
        let b = Body::parse(br#"{"a":"24","b":24,"c":"0x0800","d":"x","e":null,"f":-1}"#).unwrap();
        assert_eq!(b.u64("a").unwrap(), Some(24));
        assert_eq!(b.u64("b").unwrap(), Some(24));
        assert_eq!(b.u64("c").unwrap(), Some(0x800));
        assert!(b.u64("d").unwrap_err().message.starts_with("d:"));
        assert_eq!(b.u64("e").unwrap(), None);
        assert!(b.u64("f").is_err());
        assert!(b.u32_max("a", 16).is_err());
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
        assert!(Body::parse(b"").unwrap().0.is_empty());
    }
}
