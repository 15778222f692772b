//! The admin API's routes, parsed once from method and path into a typed enum.

use http::Method;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::util::text::truncate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    GetConfig,
    ApplyConfig,
    ConfigVersions,
    Rollback,
    ListKeys,
    CreateKey,
    GetKey(String),
    RevokeKey(String),
    RotateKey(String),
    Usage,
    PurgeCache,
    ListAccessRequests,
    GetAccessRequest(String),
    ApproveAccess(String),
    DenyAccess(String),
    Metrics,
    UsageSeries,
}

impl AdminRoute {
    /// The route for `method` + `path` (under `/admin`): 404 for an unknown path, 405 for a
    /// known path with the wrong method.
    pub fn parse(method: &Method, path: &str) -> Result<AdminRoute> {
        let path = path.trim_end_matches('/');
        let Some(rest) = path.strip_prefix("/admin") else {
            return Err(GatewayError::not_found(ErrorCode::RouteNotFound, "admin routes live under /admin/"));
        };
        let segments: Vec<&str> = rest.split('/').skip(1).collect();
        let id = |s: &str| s.to_string();
        let (route, allowed) = match segments.as_slice() {
            ["config"] if method == Method::GET => (AdminRoute::GetConfig, Method::GET),
            ["config"] => (AdminRoute::ApplyConfig, Method::POST),
            ["config", "versions"] => (AdminRoute::ConfigVersions, Method::GET),
            ["config", "rollback"] => (AdminRoute::Rollback, Method::POST),
            ["keys"] if method == Method::GET => (AdminRoute::ListKeys, Method::GET),
            ["keys"] => (AdminRoute::CreateKey, Method::POST),
            ["keys", key] => (AdminRoute::GetKey(id(key)), Method::GET),
            ["keys", key, "revoke"] => (AdminRoute::RevokeKey(id(key)), Method::POST),
            ["keys", key, "rotate"] => (AdminRoute::RotateKey(id(key)), Method::POST),
            ["usage"] => (AdminRoute::Usage, Method::GET),
            ["usage", "series"] => (AdminRoute::UsageSeries, Method::GET),
            ["metrics"] => (AdminRoute::Metrics, Method::GET),
            ["cache", "purge"] => (AdminRoute::PurgeCache, Method::POST),
            ["access-requests"] => (AdminRoute::ListAccessRequests, Method::GET),
            ["access-requests", request] => (AdminRoute::GetAccessRequest(id(request)), Method::GET),
            ["access-requests", request, "approve"] => (AdminRoute::ApproveAccess(id(request)), Method::POST),
            ["access-requests", request, "deny"] => (AdminRoute::DenyAccess(id(request)), Method::POST),
            _ => {
                return Err(GatewayError::not_found(
                    ErrorCode::RouteNotFound,
                    format!("no admin route {method} {}", truncate(path, 200)),
                ))
            }
        };
        if *method != allowed {
            return Err(GatewayError::method_not_allowed(format!(
                "{} accepts {allowed}, not {method}",
                truncate(path, 200)
            )));
        }
        Ok(route)
    }

    /// The action's name in the audit line.
    pub fn action(&self) -> &'static str {
        match self {
            AdminRoute::GetConfig => "config.get",
            AdminRoute::ApplyConfig => "config.apply",
            AdminRoute::ConfigVersions => "config.versions",
            AdminRoute::Rollback => "config.rollback",
            AdminRoute::ListKeys => "keys.list",
            AdminRoute::CreateKey => "keys.create",
            AdminRoute::GetKey(_) => "keys.get",
            AdminRoute::RevokeKey(_) => "keys.revoke",
            AdminRoute::RotateKey(_) => "keys.rotate",
            AdminRoute::Usage => "usage.get",
            AdminRoute::PurgeCache => "cache.purge",
            AdminRoute::ListAccessRequests => "access.list",
            AdminRoute::GetAccessRequest(_) => "access.get",
            AdminRoute::ApproveAccess(_) => "access.approve",
            AdminRoute::DenyAccess(_) => "access.deny",
            AdminRoute::Metrics => "metrics.get",
            AdminRoute::UsageSeries => "usage.series",
        }
    }

    /// The key id a route names, if any.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            AdminRoute::GetKey(id) | AdminRoute::RevokeKey(id) | AdminRoute::RotateKey(id) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_route_and_refuses_wrong_methods() {
        let ok = |m: Method, p: &str| AdminRoute::parse(&m, p).unwrap();
        assert_eq!(ok(Method::GET, "/admin/config"), AdminRoute::GetConfig);
        assert_eq!(ok(Method::POST, "/admin/config/"), AdminRoute::ApplyConfig);
        assert_eq!(ok(Method::POST, "/admin/keys/k_1/rotate"), AdminRoute::RotateKey("k_1".into()));
        assert_eq!(ok(Method::POST, "/admin/cache/purge").action(), "cache.purge");
        assert_eq!(ok(Method::GET, "/admin/access-requests"), AdminRoute::ListAccessRequests);
        assert_eq!(ok(Method::GET, "/admin/access-requests/ar_1"), AdminRoute::GetAccessRequest("ar_1".into()));
        assert_eq!(ok(Method::POST, "/admin/access-requests/ar_1/approve").action(), "access.approve");
        assert_eq!(ok(Method::POST, "/admin/access-requests/ar_1/deny"), AdminRoute::DenyAccess("ar_1".into()));
        assert!(AdminRoute::parse(&Method::POST, "/admin/access-requests").is_err());
        assert_eq!(ok(Method::GET, "/admin/metrics"), AdminRoute::Metrics);
        assert_eq!(ok(Method::GET, "/admin/usage/series").action(), "usage.series");
        let e = AdminRoute::parse(&Method::GET, "/admin/keys/k_1/revoke").unwrap_err();
        assert_eq!(e.code, ErrorCode::MethodNotAllowed);
        let e = AdminRoute::parse(&Method::GET, "/admin/nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::RouteNotFound);
    }
}
