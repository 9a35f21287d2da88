//! `bigtxn`.

use super::Context;
use crate::results::ScenarioResult;

pub(super) async fn run(_ctx: &Context<'_>) -> ScenarioResult {
    let mut r = ScenarioResult::new("bigtxn", vec![]);
    r.error = Some("not implemented".to_owned());
    r
}
