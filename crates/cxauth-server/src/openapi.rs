//! The OpenAPI document: its fixed parts and what is added to it once the routes have filled
//! in the paths ([`crate::routes::api_routes`] registers each handler with its description).

/// The fixed parts of the OpenAPI document; its paths come from the handlers' `utoipa::path`
/// annotations as [`crate::routes::api_routes`] registers them, so the document and the router cannot drift.
/// The security schemes are the two headers admin endpoints read ([`crate::extract::credential`]);
/// each admin operation lists both as alternatives, so Swagger UI's Authorize dialog offers
/// them and "Try it out" sends whichever was filled in. Auth endpoints list none: they ignore
/// both headers. The emulator's tag and schemes are added by [`crate::routes::api_routes`] only when it is on,
/// so the page shows no empty section.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cxauth",
        description = "A self-hostable, wire-compatible RingCX (Engage Voice) authentication \
                       server. Admin endpoints are served under both /voice/api/v1 and /api/v1. \
                       To call them here, log in (POST /api/auth/login/admin), then give the \
                       answer's accessToken to Authorize as the bearer token."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Logins, refresh, logout, token exchange, public keys"),
        (name = "admin", description = "API tokens, accounts and users of the caller"),
        (name = "cxauth", description = "cxauth's own additions under /cxauth/v1 (not part of RingCX): API tokens with names, expiry and last use"),
        (name = "operations", description = "Health and readiness")
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` and `X-Auth-Token` security schemes to [`ApiDoc`].
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Authorization: Bearer with an access token (the accessToken of a login)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "X-Auth-Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "An API token, a legacy auth token or an access token",
            ))),
        );
    }
}

/// Adds the emulator's tag and its two credentials (the app's client id and secret as HTTP
/// Basic; a RingEX access token as bearer) to the document of a server that runs it.
pub fn document_emulator(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::tag::TagBuilder;
    doc.tags.get_or_insert_with(Vec::new).push(
        TagBuilder::new()
            .name("ringex-emulator")
            .description(Some(
                "The built-in RingEX emulator (development and tests only)",
            ))
            .build(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "ringex-client",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("An emulator app's client id and secret"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "ringex-bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A RingEX access token issued by the emulator"))
                .build(),
        ),
    );
}

/// Operation ids must be unique in a document (Swagger UI keys its expanded sections and "Try
/// it out" state by them), but each admin handler is registered under both prefixes with the
/// handler's name as id: the short `/api/v1` copies get a `_api_v1` suffix.
pub fn unique_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/admin") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = &mut op.operation_id {
                id.push_str("_api_v1");
            }
        }
    }
}
