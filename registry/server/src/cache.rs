//! A bounded cache of parsed schemas, for compatibility checks. Bounded by the size of the
//! schema texts it holds (parsed forms are roughly 20× their text for Avro records), with
//! eviction of arbitrary entries when full, so a working set larger than the budget degrades
//! gradually instead of thrashing.

use std::collections::HashMap;
use std::sync::Arc;

use herald_schema::ParsedSchema;

/// Schema text bytes whose parsed forms the cache may hold: ~4 MiB of text is ~80 MiB of
/// parsed Avro, enough for a FULL_TRANSITIVE check against thousands of versions.
pub const PARSED_CACHE_TEXT_BYTES_MAX: usize = 4 * 1024 * 1024;

pub struct ParsedCache {
    entries: HashMap<u32, Arc<ParsedSchema>>,
    text_bytes: usize,
    text_bytes_max: usize,
}

impl ParsedCache {
    pub fn new(text_bytes_max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            text_bytes: 0,
            text_bytes_max,
        }
    }

    pub fn get(&self, id: u32) -> Option<Arc<ParsedSchema>> {
        self.entries.get(&id).cloned()
    }

    pub fn insert(&mut self, id: u32, parsed: Arc<ParsedSchema>) {
        let size = parsed.text_bytes();
        if size > self.text_bytes_max {
            return;
        }
        if let Some(previous) = self.entries.remove(&id) {
            self.text_bytes -= previous.text_bytes();
        }
        while self.text_bytes + size > self.text_bytes_max {
            let Some(&victim) = self.entries.keys().next() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&victim) {
                self.text_bytes -= evicted.text_bytes();
            }
        }
        self.text_bytes += size;
        self.entries.insert(id, parsed);
    }

    pub fn remove(&mut self, id: u32) {
        if let Some(evicted) = self.entries.remove(&id) {
            self.text_bytes -= evicted.text_bytes();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_schema::SchemaType;

    fn schema(name: &str) -> Arc<ParsedSchema> {
        let text = format!(r#"{{"type":"record","name":"{name}","fields":[]}}"#);
        Arc::new(ParsedSchema::parse(SchemaType::Avro, &text, &[]).expect("valid"))
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let one = schema("A0").canonical_text().len();
        let mut cache = ParsedCache::new(one * 3);
        for n in 0..10 {
            cache.insert(n, schema(&format!("A{n}")));
            assert!(cache.text_bytes <= one * 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(9).is_some(), "the newest entry is kept");
        cache.remove(9);
        assert_eq!(cache.len(), 2);
        cache.insert(1, schema("A1"));
        cache.insert(1, schema("A1"));
        assert!(cache.text_bytes <= one * 3);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let mut cache = ParsedCache::new(4);
        cache.insert(1, schema("A"));
        assert!(cache.is_empty());
    }
}
