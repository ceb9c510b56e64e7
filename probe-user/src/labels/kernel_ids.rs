//! The labels behind the small ids the kernel's fast path keys its aggregates by: method
//! and version ids (probe_common::http1's), and route ids, which the agent gives out.
//!
//! The kernel keys a request's route by the hash of its path with identifier segments
//! folded (`probe_common::route::path_key`). The first time it sees a key it sends the path;
//! the agent routes that path as it routes any other (templates, heuristic, `--max-routes`)
//! and gives the route an id, which it writes into the kernel's `ROUTES` map under the key.
//! Every later request with that key is labelled in the kernel, by id.
use super::Service;
use std::collections::HashMap;

use probe_common::http1::{METHODS, VERSION_10, VERSION_2};

use super::{OTHER_METHOD, RouteLabel};

/// The `http_request_method` label of a kernel method id (0: not one of the nine).
pub fn method(id: u8) -> &'static str {
    match (id as usize).checked_sub(1).and_then(|i| METHODS.get(i)) {
        // METHODS are ASCII.
        Some(m) => std::str::from_utf8(m).unwrap_or(OTHER_METHOD),
        None => OTHER_METHOD,
    }
}

/// The `network_protocol_version` label of a kernel version id.
pub fn version(id: u8) -> &'static str {
    match id {
        VERSION_10 => "1.0",
        VERSION_2 => "2",
        _ => "1.1",
    }
}

/// Path keys the agent remembers per generation (for the requests the kernel measured
/// before its `ROUTES` map had their key); two generations are kept.
const KEYS_PER_GENERATION: usize = 65_536;

/// Route ids: one per (service, route label), from 1; and the path keys that map to them.
#[derive(Default)]
pub struct RouteIds {
    /// `routes[id - 1]`.
    routes: Vec<(Service, RouteLabel)>,
    ids: HashMap<(Service, String, bool), u32>,
    keys: HashMap<(u32, u64), u32>,
    older_keys: HashMap<(u32, u64), u32>,
}

impl RouteIds {
    /// The id of a route of `service`, given out on first sight.
    pub fn id(&mut self, service: &Service, route: RouteLabel) -> u32 {
        let k = (service.clone(), route.route.clone(), route.folded);
        if let Some(id) = self.ids.get(&k) {
            return *id;
        }
        self.routes.push((service.clone(), route));
        let id = self.routes.len() as u32;
        self.ids.insert(k, id);
        id
    }

    /// Forgets the routes of a forgotten service: its ids are not given out again (the
    /// kernel may still hold them in its `ROUTES` map, which drops them as it needs room),
    /// but their labels go.
    pub fn forget(&mut self, service: &Service) {
        self.ids.retain(|(s, ..), _| s != service);
        for (s, label) in self.routes.iter_mut().filter(|(s, _)| s == service) {
            *s = Service::default();
            *label = RouteLabel { route: String::new(), folded: false };
        }
    }

    /// The route of an id.
    pub fn route(&self, id: u32) -> Option<&RouteLabel> {
        self.routes.get((id as usize).checked_sub(1)?).map(|(_, r)| r)
    }

    /// Remembers that `key` of service id `service` is route `id`.
    pub fn set_key(&mut self, service: u32, key: u64, id: u32) {
        if self.keys.len() >= KEYS_PER_GENERATION {
            self.older_keys = std::mem::take(&mut self.keys);
        }
        self.keys.insert((service, key), id);
    }

    /// The route id of a path key, if the agent routed it.
    pub fn of_key(&self, service: u32, key: u64) -> Option<u32> {
        self.keys.get(&(service, key)).or_else(|| self.older_keys.get(&(service, key))).copied()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_method_and_version_ids() {
        assert_eq!(method(0), "_OTHER");
        assert_eq!(method(1), "GET");
        assert_eq!(method(probe_common::http1::METHOD_HEAD), "HEAD");
        assert_eq!(method(9), "PATCH");
        assert_eq!(method(10), "_OTHER");
        assert_eq!(version(0), "1.0");
        assert_eq!(version(1), "1.1");
    }

    #[test]
    fn one_id_per_service_and_route() {
        let mut ids = RouteIds::default();
        let (a, b): (Service, Service) = ("a".into(), "b".into());
        let r = |s: &str| RouteLabel { route: s.into(), folded: false };
        let x = ids.id(&a, r("/x"));
        assert_eq!(ids.id(&a, r("/x")), x);
        assert_ne!(ids.id(&b, r("/x")), x);
        assert_eq!(ids.route(x).map(|r| r.route.as_str()), Some("/x"));
        assert!(ids.route(0).is_none());
        ids.set_key(1, 42, x);
        assert_eq!(ids.of_key(1, 42), Some(x));
        assert_eq!(ids.of_key(2, 42), None);
    }

    #[test]
    fn keys_are_bounded_and_recent_ones_kept() {
        let mut ids = RouteIds::default();
        for k in 0..(3 * KEYS_PER_GENERATION as u64) {
            ids.set_key(1, k, 1);
        }
        assert!(ids.keys.len() + ids.older_keys.len() <= 2 * KEYS_PER_GENERATION);
        assert_eq!(ids.of_key(1, 3 * KEYS_PER_GENERATION as u64 - 1), Some(1));
    }
}
