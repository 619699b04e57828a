//! `zonefwd import`: a managed resolver's forwarding rules as zonefwd routes, printed
//! as `[[route]]` tables in TOML (a fragment an `include` can take as it is).
//!
//! - `azure`: Azure DNS Private Resolver forwarding rulesets (`az dns-resolver
//!   forwarding-rule list -o json`)
//! - `route53`: Route 53 Resolver rules (`aws route53resolver list-resolver-rules`)
//!
//! Both come down to `Rule`s, which `render` groups into one route per distinct target
//! list, in the order the rules came. With `--config PATH` (`Existing`), the output
//! fits PATH as a fragment: every zone PATH already routes (the catch-all among them)
//! is left out as a comment naming the route that has it, and no route name repeats
//! one of PATH's. The JSON is read leniently (fields the CLIs add
//! over time are ignored) and checked strictly: every error names the rule by its
//! index and name.

mod azure;
mod route53;
mod rules;

pub use azure::azure_ruleset;
pub use route53::route53_rules;
pub use rules::{CloudLimit, Existing, ImportError, Rule};
