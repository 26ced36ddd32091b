// The viewer's own interface around the remote display: the toolbar (which hides itself while
// the desktop is in use), the status overlay, the "unstable" notice, the menu with its clipboard
// panel, and the fullscreen switch. It knows nothing of Guacamole: viewer.js calls status(),
// connected() and unstable(), and listens through the on* callbacks.

/** How long the toolbar stays after the pointer leaves it. */
const TOOLBAR_LINGER_MS = 2500;

export class Chrome {
  constructor(doc, config) {
    this.doc = doc;
    this.config = config;
    const $ = (id) => doc.getElementById(id);
    this.el = {
      toolbar: $("toolbar"),
      hotspot: $("toolbar-hotspot"),
      badge: $("badge"),
      overlay: $("overlay"),
      title: $("overlay-title"),
      detail: $("overlay-detail"),
      reconnect: $("btn-reconnect"),
      login: $("link-login"),
      notice: $("notice"),
      menu: $("menu"),
      menuButton: $("btn-menu"),
      fullscreen: $("btn-fullscreen"),
      cad: $("btn-cad"),
      clipboard: $("clipboard-text"),
      clipboardNote: $("clipboard-note"),
      sendClipboard: $("btn-send-clipboard"),
      disconnect: $("btn-disconnect"),
    };
    this.onReconnect = () => {};
    this.onDisconnect = () => {};
    this.onCtrlAltDel = () => {};
    this.onSendClipboard = () => {};
    this.onPanelFocus = () => {};
    this.isConnected = false;
    this.hideTimer = null;
    this.wire();
  }

  wire() {
    const { el } = this;
    el.reconnect.addEventListener("click", () => this.onReconnect());
    el.menuButton.addEventListener("click", () => this.toggleMenu());
    el.cad.addEventListener("click", () => {
      this.onCtrlAltDel();
      this.toggleMenu(false);
    });
    el.disconnect.addEventListener("click", () => {
      this.toggleMenu(false);
      this.onDisconnect();
    });
    el.sendClipboard.addEventListener("click", () => this.onSendClipboard(el.clipboard.value));
    el.fullscreen.addEventListener("click", () => this.toggleFullscreen());
    this.doc.addEventListener("fullscreenchange", () => this.fullscreenChanged());
    if (!this.doc.fullscreenEnabled) {
      el.fullscreen.hidden = true;
    }

    // Clicks on the desktop close the menu.
    this.doc.getElementById("display").addEventListener("mousedown", () => this.toggleMenu(false));

    // Typing in the menu must reach the menu, not the desktop.
    for (const field of [el.clipboard, el.menu]) {
      field.addEventListener("focusin", () => this.onPanelFocus(true));
      field.addEventListener("focusout", () => {
        // focusout fires before the next element takes focus: look once it has.
        window.setTimeout(() => this.onPanelFocus(this.panelFocused()), 0);
      });
    }

    if (this.config.canCopy && this.config.canPaste) {
      el.clipboardNote.textContent = "Text copied on the desktop appears here; edit it and send it back.";
    } else if (this.config.canCopy) {
      el.clipboardNote.textContent = "Your group may copy from this desktop but not paste into it.";
    } else if (this.config.canPaste) {
      el.clipboardNote.textContent = "Your group may paste into this desktop but not copy from it.";
    } else {
      el.clipboardNote.textContent = "The clipboard is turned off for your group.";
    }
    el.sendClipboard.disabled = !this.config.canPaste;
    el.clipboard.readOnly = !this.config.canPaste;

    // The toolbar: shown while the pointer is near the top edge or on it, or a menu is open.
    el.hotspot.addEventListener("mouseenter", () => this.showToolbar());
    el.hotspot.addEventListener("touchstart", () => this.showToolbar(), { passive: true });
    el.toolbar.addEventListener("mouseenter", () => this.showToolbar());
    el.toolbar.addEventListener("mouseleave", () => this.scheduleHide());
    this.showToolbar();
  }

  // --- status ----------------------------------------------------------------------------------

  /**
   * Shows the overlay in `state` (connecting, waiting, retrying, failed, signed-out,
   * disconnected) with a title and a detail line.
   */
  status(state, title, detail = "", { reconnect = false, login = false, code = null } = {}) {
    const { el } = this;
    this.isConnected = false;
    el.overlay.dataset.state = state;
    if (code === null) {
      delete el.overlay.dataset.code;
    } else {
      el.overlay.dataset.code = String(code);
    }
    el.overlay.hidden = false;
    el.title.textContent = title;
    el.detail.textContent = detail;
    el.reconnect.hidden = !reconnect;
    el.reconnect.textContent = state === "retrying" ? "Reconnect now" : "Reconnect";
    el.login.hidden = !login;
    const busy = state === "connecting" || state === "waiting" || state === "retrying";
    this.badge(busy ? "connecting" : "offline", busy ? "Connecting" : "Offline");
    this.showToolbar(true);
  }

  connected() {
    this.isConnected = true;
    this.el.overlay.hidden = true;
    this.el.overlay.dataset.state = "connected";
    this.badge("connected", "Connected");
    this.scheduleHide();
  }

  /** The tunnel went quiet (UNSTABLE) or recovered. */
  unstable(on) {
    this.el.notice.hidden = !on;
    if (this.isConnected) {
      this.badge(on ? "unstable" : "connected", on ? "Unstable" : "Connected");
    }
  }

  badge(state, text) {
    this.el.badge.dataset.state = state;
    this.el.badge.textContent = text;
  }

  // --- clipboard -------------------------------------------------------------------------------

  showClipboard(text) {
    this.el.clipboard.value = text;
  }

  panelFocused() {
    const active = this.doc.activeElement;
    return !this.el.menu.hidden && active !== null && this.el.menu.contains(active);
  }

  // --- menu, toolbar, fullscreen ---------------------------------------------------------------

  toggleMenu(open = this.el.menu.hidden) {
    const { el } = this;
    if (el.menu.hidden === !open) {
      return;
    }
    el.menu.hidden = !open;
    el.menuButton.setAttribute("aria-expanded", String(open));
    if (open) {
      this.showToolbar(true);
    } else {
      this.onPanelFocus(false);
      this.scheduleHide();
    }
  }

  showToolbar(pinned = false) {
    window.clearTimeout(this.hideTimer);
    this.el.toolbar.classList.add("toolbar--shown");
    if (!pinned) {
      this.scheduleHide();
    }
  }

  scheduleHide() {
    window.clearTimeout(this.hideTimer);
    this.hideTimer = window.setTimeout(() => {
      const busy = !this.isConnected || !this.el.menu.hidden || this.el.toolbar.matches(":hover");
      if (!busy) {
        this.el.toolbar.classList.remove("toolbar--shown");
      }
    }, TOOLBAR_LINGER_MS);
  }

  async toggleFullscreen() {
    try {
      if (this.doc.fullscreenElement) {
        await this.doc.exitFullscreen();
      } else {
        await this.doc.documentElement.requestFullscreen({ navigationUI: "hide" });
        // In fullscreen, Chromium can hand Escape, Alt-Tab and friends to the page.
        await navigator.keyboard?.lock?.().catch(() => {});
      }
    } catch {
      // Refused (no user gesture, or not allowed in this frame): nothing to undo.
    }
  }

  fullscreenChanged() {
    const on = this.doc.fullscreenElement !== null;
    this.el.fullscreen.textContent = on ? "Exit full screen" : "Full screen";
    if (!on) {
      navigator.keyboard?.unlock?.();
    }
  }
}
