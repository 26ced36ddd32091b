//! What `templates/base.html` needs on every page: the design system's style sheet, the page's
//! ES module, the top bar (who is signed in, which sections they may open, the sign-out form's
//! CSRF token), and the section tabs of the admin area. Pages hold a [`Layout`] in a field named
//! `layout`; the base template reads it from there.

use crate::auth::{Auth, Principal, csrf};
use crate::store::Permissions;

/// Top-level sections, for `aria-current` in the top bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    None,
    Dashboard,
    Admin,
    Account,
}

/// One tab of the admin area: its path, label, and the right that shows it.
pub struct AdminTab {
    pub path: &'static str,
    pub label: &'static str,
    pub visible: fn(&Permissions) -> bool,
}

/// The admin area's sections, in the order of the tabs. A section of another family adds one
/// line here.
pub const ADMIN_TABS: &[AdminTab] = &[
    AdminTab {
        path: "/admin/users",
        label: "Users",
        visible: |p| p.view_users,
    },
    AdminTab {
        path: "/admin/groups",
        label: "Groups",
        visible: |p| p.view_groups,
    },
    AdminTab {
        path: "/admin/droplets",
        label: "Droplets",
        visible: |p| p.view_droplets || p.edit_droplets,
    },
    AdminTab {
        path: "/admin/instances",
        label: "Instances",
        visible: |p| p.view_instances,
    },
    AdminTab {
        path: "/admin/workshops",
        label: "Workshops",
        visible: |p| p.view_workshops,
    },
    AdminTab {
        path: "/admin/tenants",
        label: "Tenants",
        visible: |p| p.view_tenants || p.edit_tenants,
    },
    AdminTab {
        path: "/admin/audit",
        label: "Audit log",
        visible: |_| true,
    },
    AdminTab {
        path: "/admin/system",
        label: "System",
        visible: |_| true,
    },
];

/// The signed-in user as the top bar shows them.
pub struct NavUser {
    pub display_name: String,
    pub username: String,
    /// First letter of the display name, for the avatar.
    pub initial: String,
    pub admin: bool,
}

/// A tab as rendered: label, path, current or not.
pub struct Tab {
    pub path: &'static str,
    pub label: &'static str,
    pub current: bool,
}

pub struct Layout {
    pub style_url: String,
    /// The page's ES module, if it has one.
    pub script_url: Option<String>,
    pub user: Option<NavUser>,
    pub section: Section,
    pub csrf_token: String,
    pub csrf_header: &'static str,
    /// The admin area's tabs (empty outside it).
    pub tabs: Vec<Tab>,
}

impl Layout {
    /// A page for anybody: sign-in, registration, errors.
    pub fn anonymous() -> Self {
        Self {
            style_url: super::assets::url("css/app.css"),
            script_url: None,
            user: None,
            section: Section::None,
            csrf_token: String::new(),
            csrf_header: csrf::HEADER,
            tabs: Vec::new(),
        }
    }

    /// A page of a signed-in user.
    pub fn user(auth: &Auth, principal: &Principal, section: Section) -> Self {
        let user = &principal.user;
        let initial = user
            .display_name
            .chars()
            .find(|c| c.is_alphanumeric())
            .map(|c| c.to_uppercase().collect())
            .unwrap_or_else(|| "?".to_owned());
        Self {
            user: Some(NavUser {
                display_name: user.display_name.clone(),
                username: user.username.clone(),
                initial,
                admin: principal.permissions.admin_panel,
            }),
            section,
            csrf_token: auth.csrf_token(principal).unwrap_or_default(),
            ..Self::anonymous()
        }
    }

    /// A page of the admin area, `current` being its tab's path.
    pub fn admin(auth: &Auth, principal: &Principal, current: &str) -> Self {
        let mut layout = Self::user(auth, principal, Section::Admin);
        layout.tabs = visible_tabs(&principal.permissions)
            .map(|t| Tab {
                path: t.path,
                label: t.label,
                current: t.path == current,
            })
            .collect();
        layout
    }

    /// Names the page's module (a path below the assets, e.g. `js/dashboard.js`).
    pub fn with_script(mut self, path: &str) -> Self {
        self.script_url = Some(super::assets::url(path));
        self
    }

    pub fn is(&self, section: &str) -> bool {
        let current = match self.section {
            Section::None => "",
            Section::Dashboard => "dashboard",
            Section::Admin => "admin",
            Section::Account => "account",
        };
        current == section
    }
}

/// The admin tabs `permissions` may open.
pub fn visible_tabs(permissions: &Permissions) -> impl Iterator<Item = &'static AdminTab> + '_ {
    ADMIN_TABS.iter().filter(|t| (t.visible)(permissions))
}
