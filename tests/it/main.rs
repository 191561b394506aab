//! The integration tests, one binary (so CI links once): each module is a black-box
//! test of one area through real sockets on 127.0.0.1:0, a real `redis-server`, nginx,
//! Chromium and the published client packages, as the README describes.

mod common;

mod artisan;
mod auth;
mod cluster;
mod cluster_view;
mod compression;
mod config_file;
mod container;
mod dashboard;
mod deployment;
mod docs;
mod emithub;
mod event_fake;
mod hardening;
mod history;
mod http_api;
mod laravel;
mod library;
mod native_ws;
mod pusher_js;
mod pusher_protocol;
mod rfc6455;
mod rolling;
mod rtc;
mod seed_examples;
mod server_binary;
mod tls;
mod webhooks;
