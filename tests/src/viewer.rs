//! The desktop viewer page as a user handles it in a [`Browser`]: its status overlay, and its
//! toolbar, which slides out of view once the desktop shows and comes back when the pointer
//! reaches the top edge.

use crate::browser::Browser;

/// The overlay's state (`connecting`, `waiting`, `retrying`, `failed`, `connected`, …).
pub async fn overlay_state(browser: &Browser) -> String {
    browser
        .eval("return document.getElementById('overlay').dataset.state;")
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Brings the toolbar into view as a user does, by pointing at the top edge of the window, and
/// leaves the pointer on it so that it stays: clicking a tool on a hidden toolbar fails
/// ("element not interactable"), as it would for a user.
pub async fn reveal_toolbar(browser: &Browser) {
    // In view and done sliding: its top edge at the window's.
    const SHOWN: &str = "const t = document.getElementById('toolbar'); \
                         return t.classList.contains('toolbar--shown') \
                           && Math.abs(t.getBoundingClientRect().top) < 0.5;";
    // Moving (not clicking): the sliding toolbar may already cover the hotspot.
    browser.point_at("#toolbar-hotspot").await;
    browser.wait_for_js("the toolbar in view", SHOWN).await;
    browser.point_at(".toolbar__name").await;
}
