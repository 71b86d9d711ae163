//! The console's integration tests: plain HTTP against its routes, its model of real
//! coord primitives on a real etcd, and the page in a real browser (headless Chromium
//! through chromedriver).

mod browser;
mod database;
mod etcd;
mod http;
mod support;
