//! Use a permanent API token (`X-Auth-Token`), as IVR callouts and scripts do: no login, no
//! refresh.
//!
//! ```sh
//! CXAUTH_SERVER=http://127.0.0.1:8080 CXAUTH_API_TOKEN=aws80:… \
//!     cargo run -p cxauth-client --example api_token
//! ```

use cxauth_client::{Client, SessionClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("CXAUTH_SERVER").map_err(|_| "set CXAUTH_SERVER")?;
    let token = std::env::var("CXAUTH_API_TOKEN").map_err(|_| "set CXAUTH_API_TOKEN")?;
    let api = SessionClient::with_api_token(Client::builder(&server).build()?, token);
    for u in api.users(true, false).await? {
        println!("{}\t{}\t{}", u.user_id, u.user_name, u.roles.join(","));
    }
    Ok(())
}
