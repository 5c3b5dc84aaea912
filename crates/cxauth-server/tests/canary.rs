//! Log canary: drive every endpoint with known canary secrets while the most verbose log level
//! records everything the server process logs, then look for the secrets — in clear, base64 and
//! URL-encoded — in the log.

use base64::Engine as _;
use cxauth_client::Credential;
use cxauth_testkit::*;
use tracing_subscriber::util::SubscriberInitExt as _;

const CANARY_PASSWORD: &str = "Canary-Pa55word-7f3e9d";

fn encodings(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let url: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![secret.to_owned(), b64, b64url, url]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace_level() {
    let capture = logs::Capture::default();
    capture
        .subscriber("trace,reqwest=off")
        .try_init()
        .expect("the only subscriber in this test binary");

    let s = TestApp::spawn_with(|c| {
        c.bootstrap_admin_password = Some(secrecy::SecretString::from(CANARY_PASSWORD))
    })
    .await;
    let mut secrets = vec![CANARY_PASSWORD.to_owned()];
    // Login in all three styles, right and wrong; the query style puts the password in the URL.
    let url = s.url("/api/auth/login/admin");
    http()
        .post(format!(
            "{url}?username=admin&password={CANARY_PASSWORD}&platformId=aws80"
        ))
        .send()
        .await
        .expect("send");
    http()
        .post(format!(
            "{url}?username=admin&password={CANARY_PASSWORD}x&platformId=aws80"
        ))
        .send()
        .await
        .expect("send");
    http().post(&url).json(&serde_json::json!({"username": "admin", "password": CANARY_PASSWORD, "platformId": "aws80"})).send().await.expect("send");
    let session = s
        .client
        .login("admin", CANARY_PASSWORD, PLATFORM)
        .await
        .expect("login");
    secrets.push(session.access_token.clone());
    let rt = session.refresh_token.clone().expect("rt");
    secrets.push(rt.clone());
    let bearer = Credential::Bearer(session.access_token.clone());
    let token = s.client.create_api_token(&bearer).await.expect("token");
    secrets.push(token.clone());
    s.client
        .list_api_tokens(&Credential::XAuthToken(token.clone()))
        .await
        .expect("list");
    s.client.accounts(&bearer).await.expect("accounts");
    s.client.users(&bearer, false, false).await.expect("users");
    let renewed = s.client.refresh(&rt).await.expect("refresh");
    secrets.push(renewed.access_token.clone());
    secrets.push(renewed.refresh_token.clone().expect("rt"));
    // Errors that carry secrets in headers, paths and bodies.
    let _ = s.client.refresh(&format!("{rt}-tampered")).await;
    let _ = s
        .get(&format!("/nowhere?password={CANARY_PASSWORD}"))
        .send()
        .await;
    let _ = s
        .get("/voice/api/v1/admin/accounts")
        .header("x-auth-token", format!("{token}0"))
        .send()
        .await;
    let _ = s
        .delete(&format!("/voice/api/v1/admin/token/{token}x"))
        .bearer_auth(&session.access_token)
        .send()
        .await;
    s.client
        .delete_api_token(&bearer, &token)
        .await
        .expect("delete");
    s.client
        .logout(renewed.refresh_token.as_deref().expect("rt"))
        .await
        .expect("logout");
    let _ = s.client.logout(&rt).await;
    console_canary(&s, &mut secrets).await;

    let log = capture.text();
    assert!(
        log.lines().count() > 50,
        "the log is really captured ({} lines)",
        log.lines().count()
    );
    assert!(
        log.contains("/api/auth/logout/[redacted]"),
        "token paths are redacted in the log"
    );
    let mut leaks = Vec::new();
    for secret in &secrets {
        for form in encodings(secret) {
            if log.contains(&form) {
                leaks.push(form.chars().take(12).collect::<String>());
            }
        }
    }
    eprintln!(
        "log canary: {} log lines at TRACE, {} secrets × 4 encodings searched, {} found",
        log.lines().count(),
        secrets.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "secrets in the log (first characters): {leaks:?}"
    );
}

/// The web console with the canary password: login (right and wrong), pages read with the
/// session cookies, a token made on its form, a password set on a user's form, logout.
async fn console_canary(s: &TestApp, secrets: &mut Vec<String>) {
    let kid = s.create_user("canary-kid", Some("admin"), &[], &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = |pw: &str| {
        vec![
            ("username", "admin".to_owned()),
            ("password", pw.to_owned()),
            ("platformId", PLATFORM.to_owned()),
        ]
    };
    let login = s.url("/console/login");
    let wrong = format!("{CANARY_PASSWORD}-wrong");
    secrets.push(wrong.clone());
    let _ = client.post(&login).form(&form(&wrong)).send().await;
    let res = client
        .post(&login)
        .form(&form(CANARY_PASSWORD))
        .send()
        .await
        .expect("console login");
    assert_eq!(res.status(), 303);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| {
            let c = c.to_str().expect("cookie");
            c[..c.find(';').expect("attributes")].to_owned()
        })
        .collect();
    for c in &cookies {
        secrets.push(c.split_once('=').expect("pair").1.to_owned());
    }
    let jar = cookies.join("; ");
    let page = client
        .get(s.url("/console/tokens"))
        .header("cookie", &jar)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    let at = page.find("name=\"csrf\" value=\"").expect("form token") + 19;
    let csrf = page[at..at + page[at..].find('"').expect("end")].to_owned();
    let made = client
        .post(s.url("/console/tokens"))
        .header("cookie", &jar)
        .form(&[("csrf", csrf.as_str()), ("name", "canary")])
        .send()
        .await
        .expect("create");
    assert_eq!(made.status(), 303);
    // The new token rides to the token page in a one-time cookie (post/redirect/get).
    let new_cookie = made
        .headers()
        .get("set-cookie")
        .expect("the one-time cookie")
        .to_str()
        .expect("cookie");
    let new_cookie = new_cookie[..new_cookie.find(';').expect("attributes")].to_owned();
    secrets.push(new_cookie.split_once('=').expect("pair").1.to_owned());
    let made = client
        .get(s.url("/console/tokens?done=created"))
        .header("cookie", format!("{jar}; {new_cookie}"))
        .send()
        .await
        .expect("token page")
        .text()
        .await
        .expect("body");
    let at = made.find("id=\"new-token\">").expect("new token") + 15;
    secrets.push(made[at..at + made[at..].find('<').expect("end")].to_owned());
    let new_pw = format!("{CANARY_PASSWORD}-new");
    secrets.push(new_pw.clone());
    let reset = client
        .post(s.url(&format!("/console/users/{kid}/password")))
        .header("cookie", &jar)
        .form(&[("csrf", csrf.as_str()), ("password", new_pw.as_str())])
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), 303);
    let out = client
        .post(s.url("/console/logout"))
        .header("cookie", &jar)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
}
