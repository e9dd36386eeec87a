//! The route table: every route of the service with the permissions it needs and the access
//! kind it records. The router is built from this table and the guard looks every request up
//! in it, so a route cannot exist without its line here, and a request to a path and method
//! the table does not know is refused.

use std::collections::HashMap;

use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;

use super::AppState;
use crate::access::{AccessKind, Permission};

/// One line of the table.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    /// The path template, as axum matches it (`/v1/persons/{person_id}`).
    pub path: &'static str,
    /// What the caller's roles must grant, all of it. Empty: open without a credential (only
    /// routes without personal data).
    pub needs: &'static [Permission],
    /// アクセス区分 of its access records.
    pub kind: AccessKind,
    /// Whether a credential is needed even though no permission is (console pages any
    /// signed-in principal may see: the status page, sign-out).
    pub signed_in: bool,
    /// The console screen's name (操作画面); API routes are named by method and template.
    pub screen: Option<&'static str>,
    pub handler: fn() -> MethodRouter<AppState>,
}

impl Route {
    pub fn new(
        method: Method,
        path: &'static str,
        needs: &'static [Permission],
        kind: AccessKind,
        handler: fn() -> MethodRouter<AppState>,
    ) -> Self {
        Self {
            method,
            path,
            needs,
            kind,
            signed_in: !needs.is_empty(),
            screen: None,
            handler,
        }
    }

    /// A console screen: its name is the 操作画面 of its access records.
    pub fn screen(mut self, name: &'static str) -> Self {
        self.screen = Some(name);
        self
    }

    /// Needs a signed-in principal, whatever its roles.
    pub fn signed_in(mut self) -> Self {
        self.signed_in = true;
        self
    }

    pub fn open(&self) -> bool {
        self.needs.is_empty() && !self.signed_in
    }

    /// A page of the staff console (HTML answers, session sign-in, redirects to sign in).
    pub fn is_console(&self) -> bool {
        is_console_path(self.path)
    }

    /// 操作画面 of the route's access records.
    pub fn screen_name(&self) -> String {
        match self.screen {
            Some(s) => s.to_owned(),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// Every route of the service.
pub fn table() -> Vec<Route> {
    let mut t = Vec::new();
    t.extend(super::persons::routes());
    t.extend(super::households::routes());
    t.extend(super::feed::routes());
    t.extend(super::audit::routes());
    t.extend(super::access_records::routes());
    t.extend(super::admin::routes());
    t.extend(super::exports::routes());
    t.extend(super::ops::routes());
    t.extend(super::console::routes());
    t
}

/// Paths of the staff console (and `/`, which leads there).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// The table by template and method, for the guard. HEAD is answered by GET routes.
#[derive(Clone, Default)]
pub struct RouteIndex {
    by_template: HashMap<&'static str, HashMap<Method, Route>>,
}

impl RouteIndex {
    pub fn new(routes: &[Route]) -> Self {
        let mut index = Self::default();
        for r in routes {
            let clash = index
                .by_template
                .entry(r.path)
                .or_default()
                .insert(r.method.clone(), r.clone());
            assert!(clash.is_none(), "route {} {} is in the table twice", r.method, r.path);
        }
        index
    }

    pub fn get(&self, method: &Method, template: &str) -> Option<&Route> {
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.by_template.get(template)?.get(method)
    }

    /// Whether some route has this template (another method gets 405, not 403).
    pub fn has_template(&self, template: &str) -> bool {
        self.by_template.contains_key(template)
    }
}

/// The router of the table's routes (methods of one path merged).
pub fn router(routes: &[Route]) -> Router<AppState> {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for r in routes {
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge((r.handler)()),
            None => by_path.push((r.path, (r.handler)())),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, mr)| router.route(path, mr))
}
