//! The console's pages against the WCAG 2.1 A and AA rules of axe-core, the
//! engine behind the browsers' own accessibility audits, run in Chromium
//! over each page as a person sees it: with a held send, a stalled handoff,
//! and signed in, with the forms that act.

use super::{Scene, sign_in};
use crate::browser::Browser;
use crate::support::repo_root;

/// Installed by `npm ci` in tests/a11y (`.ci/run` does it), pinned there.
const AXE: &str = "tests/a11y/node_modules/axe-core/axe.min.js";

fn axe() -> Option<String> {
    let path = repo_root().join(AXE);
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => {
            let needed = format!(
                "{} ({e}): install it with `(cd tests/a11y && npm ci)`",
                path.display()
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{needed}; CI=true, so the accessibility check is not skipped");
            }
            eprintln!("skipping: {needed}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_console_page_passes_the_wcag_a_and_aa_rules() {
    let Some(axe) = axe() else {
        return;
    };
    let Some(Scene {
        browser, daemon, ..
    }) = Scene::start(Browser::start()).await
    else {
        return;
    };
    let mut found = Vec::new();
    let mut audit = async |who: &str, page: &str| {
        browser.goto(&format!("{}{page}", daemon.url)).await;
        for violation in browser.accessibility_violations(&axe).await {
            found.push(format!("{page} ({who}): {violation}"));
        }
    };
    for page in [
        "/ui",
        "/ui?kind=held&owner=nobody",
        "/ui/campaigns",
        "/ui/records/campaign/c-1",
        "/ui/records/task/t-7",
        "/ui/records/campaign/c-9",
        "/ui/reports",
        "/ui/health",
        "/ui/login",
    ] {
        audit("signed out", page).await;
    }
    sign_in(&browser, &daemon, "mia", "/ui").await;
    for page in [
        "/ui",
        "/ui/records/campaign/c-1",
        "/ui/records/task/t-7",
        "/ui/health",
    ] {
        audit("signed in", page).await;
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
