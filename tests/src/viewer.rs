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
    const SHOWN: &str =
        "return document.getElementById('toolbar').getBoundingClientRect().top >= 0;";
    // Already sliding in (the class is set, the transition not over): the toolbar covers the
    // hotspot, and a click there would be intercepted.
    const COMING: &str = "const t = document.getElementById('toolbar'); \
         return t.classList.contains('toolbar--shown') || t.getBoundingClientRect().top >= 0;";
    if browser.eval(COMING).await != true {
        // The hotspot's middle is where the toolbar slides in: the pointer ends up on it.
        browser.click("#toolbar-hotspot").await;
    }
    browser.wait_for_js("the toolbar in view", SHOWN).await;
    browser.click(".toolbar__name").await;
}
