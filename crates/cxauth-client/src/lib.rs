//! cxauth-client
