//! Log in, list the accounts, and save every rotated session to a file.
//!
//! ```sh
//! CXAUTH_SERVER=http://127.0.0.1:8080 CXAUTH_USERNAME=admin CXAUTH_PASSWORD=change-me-now \
//!     cargo run -p cxauth-client --example accounts
//! ```
//!
//! Works unchanged against `https://engage.ringcentral.com` with a RingCX user and platform.

use cxauth_client::{Client, SessionClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("set {k}"));
    let server = env("CXAUTH_SERVER")?;
    let platform = std::env::var("CXAUTH_PLATFORM_ID").unwrap_or_else(|_| "aws80".into());
    let client = Client::builder(&server).build()?;
    let session = SessionClient::login(
        client,
        &env("CXAUTH_USERNAME")?,
        &env("CXAUTH_PASSWORD")?,
        &platform,
    )
    .await?
    .on_rotate(|s| {
        // A real program writes this somewhere private (mode 0600): it holds the tokens.
        if let Ok(json) = serde_json::to_string(s) {
            let _ = std::fs::write("/tmp/cxauth-example-session.json", json);
        }
    });
    for a in session.accounts().await? {
        println!(
            "{}\t{}\t{}",
            a.account_id, a.account_name, a.main_account_name
        );
    }
    session.logout().await?;
    Ok(())
}
