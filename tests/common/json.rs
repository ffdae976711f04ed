//! JSON from the test apps, read with serde_json.

pub type Json = serde_json::Value;

/// `Json::parse(text)`, and the object's keys, as the tests read them.
pub trait JsonExt {
    fn parse(text: &str) -> Result<Json, String>;
    fn keys(&self) -> Vec<&str>;
}

impl JsonExt for Json {
    fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn keys(&self) -> Vec<&str> {
        self.as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}
