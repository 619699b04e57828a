//! Zone suffix -> route. Longest match on label boundaries, case-insensitive.
//!
//! Zones are stored as lowercase wire names in a hash map; a query name is looked up
//! suffix by suffix from the whole name down to the root, so a match always ends on a
//! label boundary (`notcorp.com` never falls under `corp.com`) and a lookup costs one
//! hash probe per label, whatever the number of zones. Suffixes with more labels than
//! the deepest zone cannot match and are not probed: with only a root route, every
//! lookup is one probe.

use std::collections::HashMap;

use crate::wire;

/// foldhash with a per-process random seed (quick_cache's default): several times
/// cheaper than SipHash on short keys, on the path every query takes.
type Hasher = quick_cache::DefaultHashBuilder;

#[derive(Debug, Clone)]
pub struct Router {
    zones: HashMap<Box<[u8]>, usize, Hasher>,
    /// Labels in the deepest zone (0 for the root).
    max_labels: usize,
}

/// The route that answers a name, and the zone that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub route: usize,
    pub zone: &'a [u8],
    /// The name was routed by its parent because it is a DS query for a zone apex.
    pub ds_to_parent: bool,
}

impl Router {
    /// `zones` yields (lowercase wire zone, route index).
    pub fn new<'a>(zones: impl IntoIterator<Item = (&'a [u8], usize)>) -> Self {
        let mut map = HashMap::with_hasher(Hasher::default());
        map.extend(zones.into_iter().map(|(z, r)| (Box::from(z), r)));
        let max_labels = map
            .keys()
            .map(|z| wire::label_offsets(z).count())
            .max()
            .unwrap_or(0);
        Router {
            zones: map,
            max_labels,
        }
    }

    /// The routing table of a configuration: every zone of every route.
    pub fn for_config(config: &crate::config::Config) -> Self {
        Router::new(
            config
                .routes
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.zones.iter().map(move |z| (z.as_slice(), i))),
        )
    }

    /// Finds the route for a lowercase wire `qname`. A DS record lives in the parent
    /// zone (RFC 4034 section 5, RFC 4035 3.1.4.1), so a DS query skips a match on the
    /// whole name and is routed as its parent would be.
    pub fn route(&self, qname: &[u8], qtype: u16) -> Option<Match<'_>> {
        let skip_self = qtype == wire::TYPE_DS && qname.len() > 1;
        let mut ds_to_parent = false;
        // Suffixes deeper than any zone are skipped unprobed. A skipped whole name is
        // no zone, so a DS query for it has no apex to send to the parent either.
        let deeper = wire::label_offsets(qname)
            .count()
            .saturating_sub(self.max_labels);
        for at in wire::label_offsets(qname)
            .chain(std::iter::once(qname.len() - 1))
            .skip(deeper)
        {
            let suffix = &qname[at..];
            if skip_self && at == 0 {
                ds_to_parent = self.zones.contains_key(suffix);
                continue;
            }
            if let Some((zone, &route)) = self.zones.get_key_value(suffix) {
                return Some(Match {
                    route,
                    zone,
                    ds_to_parent,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Vec<u8> {
        let mut w = wire::name_from_str(s).unwrap();
        wire::lowercase(&mut w);
        w
    }

    fn router(zones: &[(&str, usize)]) -> Router {
        let owned: Vec<(Vec<u8>, usize)> = zones.iter().map(|(z, r)| (n(z), *r)).collect();
        Router::new(owned.iter().map(|(z, r)| (z.as_slice(), *r)))
    }

    #[test]
    fn longest_suffix_on_label_boundaries() {
        let r = router(&[(".", 0), ("corp.com", 1), ("a.corp.com", 2)]);
        let route = |name: &str, t| r.route(&n(name), t).map(|m| m.route);
        assert_eq!(route("x.a.corp.com", 1), Some(2));
        assert_eq!(route("a.corp.com", 1), Some(2));
        assert_eq!(route("b.corp.com", 1), Some(1));
        assert_eq!(route("corp.com", 1), Some(1));
        assert_eq!(route("notcorp.com", 1), Some(0));
        assert_eq!(route("xa.corp.com", 1), Some(1));
        assert_eq!(route("com", 1), Some(0));
        assert_eq!(route(".", 1), Some(0));
    }

    #[test]
    fn ds_goes_to_the_parent() {
        let r = router(&[(".", 0), ("corp.com", 1), ("a.corp.com", 2)]);
        let m = r.route(&n("a.corp.com"), wire::TYPE_DS).unwrap();
        assert_eq!((m.route, m.ds_to_parent), (1, true));
        assert_eq!(m.zone, n("corp.com").as_slice());
        assert_eq!(r.route(&n("x.a.corp.com"), wire::TYPE_DS).unwrap().route, 2);
        assert_eq!(r.route(&n("corp.com"), wire::TYPE_DS).unwrap().route, 0);
        // The root has no parent: its DS question stays with the root route.
        assert_eq!(r.route(&[0], wire::TYPE_DS).unwrap().route, 0);
    }

    #[test]
    fn names_deeper_than_every_zone_still_match_their_suffix() {
        let r = router(&[("corp.com", 1), ("com", 2)]);
        let route = |name: &str, t| r.route(&n(name), t).map(|m| m.route);
        assert_eq!(route("a.b.c.d.corp.com", 1), Some(1));
        assert_eq!(route("a.b.c.d.example.com", 1), Some(2));
        assert_eq!(route("x.corp.com", wire::TYPE_DS), Some(1));
        let m = r.route(&n("corp.com"), wire::TYPE_DS).unwrap();
        assert_eq!((m.route, m.ds_to_parent), (2, true));
        let m = r.route(&n("a.b.corp.com"), wire::TYPE_DS).unwrap();
        assert_eq!((m.route, m.ds_to_parent), (1, false));
        let root = router(&[(".", 0)]);
        assert_eq!(root.route(&n("a.b.c.example"), 1).unwrap().zone, &[0][..]);
        assert_eq!(root.route(&[0], wire::TYPE_DS).unwrap().route, 0);
    }

    #[test]
    fn no_root_route_means_no_match() {
        let r = router(&[("corp.com", 1)]);
        assert_eq!(r.route(&n("example.org"), 1), None);
        assert_eq!(r.route(&n("corp.com"), wire::TYPE_DS), None);
        assert_eq!(r.route(&[0], 1), None);
    }
}
