//! `GET /v1/models` and `GET /v1/models/{id}`: every routable model Beacon knows of, with
//! its price.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::json;

use crate::meter::pricing::PriceTable;
use crate::routing::Router;

fn pricing(price: &beacon_config::Price) -> serde_json::Value {
    json!({
        "unit": "usd_per_million_tokens",
        "input": price.input.to_string(),
        "cached_input": price.cached_input.unwrap_or(price.input).to_string(),
        "cache_write": price.cache_write.unwrap_or(price.input).to_string(),
        "output": price.output.to_string(),
    })
}

/// The model list and each model's object, built once at start.
#[derive(Debug, Default)]
pub struct Models {
    /// `GET /v1/models`.
    pub list: Bytes,
    by_id: HashMap<String, Bytes>,
}

impl Models {
    /// Builds both from the routing table and the prices.
    pub fn new(router: &Router, prices: &PriceTable) -> Self {
        let models = model_objects(router, prices);
        let by_id = models
            .iter()
            .map(|(id, m)| (id.clone(), Bytes::from(m.to_string())))
            .collect();
        let data: Vec<_> = models.into_values().collect();
        Self {
            list: Bytes::from(json!({"object": "list", "data": data}).to_string()),
            by_id,
        }
    }

    /// The object of model `id` as the path carries it (percent-encoded, e.g.
    /// `openai%2Fgpt-4o`).
    pub fn get(&self, encoded_id: &str) -> Result<&Bytes, String> {
        let id = percent_encoding::percent_decode_str(encoded_id)
            .decode_utf8_lossy()
            .into_owned();
        self.by_id.get(&id).ok_or(id)
    }
}

fn model_objects(router: &Router, prices: &PriceTable) -> BTreeMap<String, serde_json::Value> {
    let mut models: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (id, priced) in prices.iter() {
        let price = &priced.price;
        // List a priced model when its prefix names a configured provider.
        let Some(route) = router.route(id, beacon_config::Api::Chat) else {
            continue;
        };
        if !id.starts_with(&format!("{}/", route.provider.name)) {
            continue;
        }
        let owner = route.provider.name.clone();
        models.insert(
            id.clone(),
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner,
                   "pricing": pricing(price)}),
        );
    }
    // Models a provider lists: the price the meter will charge, found by the same lookup
    // (dates stripped, the bare model id, another provider's entry); null only when
    // nothing prices it (its completions then have no cost).
    for p in router.providers() {
        for m in &p.models {
            let id = format!("{}/{m}", p.name);
            let price = prices.lookup(&p.name, m, None).map(|x| pricing(&x.price));
            models.entry(id.clone()).or_insert_with(
                || json!({"id": id, "object": "model", "created": 0, "owned_by": p.name, "pricing": price}),
            );
        }
    }
    models
}
