"""The haproxy role's defaults: every value ``templates/haproxy/haproxy.cfg.j2`` reads, overridable in the
inventory (all vars, group vars, the balancer's vars) or with ``--set``. ``haproxy_vars`` computes and
checks them."""

from __future__ import annotations

from ..services import BACKEND_API, STREAM_SERVER

DEFAULTS = {
    # --- global -------------------------------------------------------------
    "haproxy_log_target": "stdout format short",
    "haproxy_log_facility": "local0",
    "haproxy_chroot": "/var/lib/haproxy",
    "haproxy_user": "haproxy",
    "haproxy_group": "haproxy",
    "haproxy_maxconn": 4096,
    # Runtime API, admin level: a unix socket only root opens; the tool reaches it through
    # the balancer's transport (fabfile/haproxy_runtime.py).
    "haproxy_admin_socket": "/run/haproxy/admin.sock",
    # The seed's TCP socket, kept for the exporter sidecar, read-only (level user).
    # Loopback only unless haproxy_stats_allow_remote is true.
    "haproxy_stats_socket_address": "127.0.0.1",
    "haproxy_stats_socket_port": 9100,
    "haproxy_stats_socket_level": "user",
    "haproxy_stats_allow_remote": False,
    "haproxy_stats_timeout": "30s",
    # Server states (MAINT, DRAIN, weights) dumped here before every reload and loaded
    # by the new process, so a server a deploy took out stays out through a reload.
    "haproxy_server_state_file": "/var/lib/haproxy/server-state",
    # Prometheus exporter (HAProxy's built-in promex): "ADDRESS:PORT", empty to disable.
    "haproxy_metrics_bind": "",
    "haproxy_metrics_path": "/metrics",
    # "fallback": a missing upstream group renders the static list with a warning; "refuse": an error.
    "haproxy_fallback": "fallback",
    # A reload's old worker lives at most this long (WebSocket sessions end then); it must outlast
    # timeout http-keep-alive and timeout server so keep-alive clients and requests finish first.
    "haproxy_hard_stop_after": "5m",
    # On a reload the old worker keeps idle keep-alive connections and closes each after its next
    # response (Connection: close) instead of closing them under clients that may be sending.
    "haproxy_idle_close_on_response": True,
    # Seconds a reload may take to start a new worker before it counts as failed.
    "haproxy_reload_timeout": 5,
    # --- TLS (Mozilla Intermediate); only rendered when a cert path is set ---
    "haproxy_tls_cert_path": "",
    "haproxy_tls_alpn": "h2,http/1.1",
    "haproxy_ssl_default_bind_ciphers": (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
    ),
    "haproxy_ssl_default_bind_ciphersuites": "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    "haproxy_ssl_default_bind_options": "ssl-min-ver TLSv1.2 no-tls-tickets",
    # --- frontend -----------------------------------------------------------
    "haproxy_bind_address": "",  # empty: all IPv4 addresses
    "haproxy_http_port": 80,
    "haproxy_https_port": 443,
    "haproxy_api_path_prefix": "/api/",
    "haproxy_api_ws_path": "/api/v1/ws",
    "haproxy_stream_path_prefix": "/hls/",
    # Answered 200 by HAProxy itself (monitor-uri), never forwarded: keepalived's check of
    # the local frontend, which no backend's health may sway.
    "haproxy_monitor_uri": "/lb-health",
    # --- timeouts (plain values; the failover switch only changes connect/check) ---
    "haproxy_timeout_connect": "5s",
    "haproxy_timeout_client": "30s",
    "haproxy_timeout_server": "30s",
    "haproxy_timeout_http_request": "10s",
    "haproxy_timeout_http_keep_alive": "10s",
    "haproxy_timeout_queue": "10s",
    "haproxy_timeout_tunnel": "1h",
    "haproxy_timeout_client_fin": "10s",
    # --- api_pool / api_ws_pool ----------------------------------------------
    "haproxy_api_balance": "roundrobin",
    "haproxy_cookie_name": "SERVERID",
    "haproxy_health_path": BACKEND_API.default_health_path,
    "haproxy_health_expect_status": 200,
    "haproxy_backend_api_port": BACKEND_API.default_port,  # when a backend host has no backend_api_listen_port
    "haproxy_backend_api_fallback": [
        {"name": "backend-api-1", "address": "127.0.0.1", "port": BACKEND_API.default_port},
    ],
    # Latency budgets of API routes: path prefix -> server timeout. A server silent past a
    # route's budget is given up on: safe requests (haproxy_failover_l7_retry_methods) are
    # replayed on another server (retry-on response-timeout), others get a 504. The longest
    # matching prefix wins; routes without a budget keep haproxy_timeout_server. A mapping set
    # in the inventory replaces this one (Ansible semantics), so repeat the health route there.
    "haproxy_api_route_timeouts": {BACKEND_API.default_health_path: "1s"},
    # --- stream_pool -----------------------------------------------------------
    # Hashes /hls/<track_id> (path only, two slashes deep) so every segment of a
    # track lands on the same streamer and its cache stays warm.
    "haproxy_stream_balance": "uri path-only depth 2",
    "haproxy_stream_hash_type": "consistent",
    "haproxy_stream_health_path": STREAM_SERVER.default_health_path,  # empty: TCP connect check only
    "haproxy_stream_server_port": STREAM_SERVER.default_port,  # when a stream host has no stream_server_listen_port
    "haproxy_stream_server_fallback": [
        {"name": "stream-server-1", "address": "127.0.0.1", "port": STREAM_SERVER.default_port},
    ],
    # --- health checks (seed values: the steady state) -------------------------
    "haproxy_check_inter": "5s",
    "haproxy_check_fall": 3,
    "haproxy_check_rise": 2,
    "haproxy_slowstart": "30s",
    # --- fast failover levers (see the template for why each one) ---------------
    # false renders the seed's plain settings for a before/after measurement.
    "haproxy_failover_tuning": True,
    "haproxy_failover_timeout_connect": "500ms",
    # A hung server accepts the check's connection and never answers: it costs a check this long.
    # inter 1s, then 400ms + 200ms per further failure: fall 3 marks a hung (or silent) server
    # DOWN at most 1 + 0.4 + 2 x 0.6 = 2.6 s after it stopped answering, with no traffic at all.
    "haproxy_failover_inter": "1s",
    "haproxy_failover_timeout_check": "400ms",
    "haproxy_failover_fastinter": "200ms",
    "haproxy_failover_downinter": "1s",
    # layer4: refused or timed-out connects of real traffic count towards error-limit. (layer7
    # would add 5xx answers, but not the response timeouts of a hung server: HAProxy replays
    # those requests elsewhere without counting them, so the checks above catch a hang.)
    "haproxy_failover_observe": "layer4",
    "haproxy_failover_error_limit": 2,
    "haproxy_failover_on_error": "mark-down",
    "haproxy_failover_retries": 3,
    "haproxy_failover_redispatch_interval": 1,
    "haproxy_failover_retry_on": "conn-failure empty-response response-timeout",
    # Replaying a request that may have reached the server is only safe for
    # these methods; others keep the always-safe conn-failure retry only.
    "haproxy_failover_l7_retry_methods": ["GET", "HEAD", "OPTIONS"],
    "haproxy_failover_http_reuse": "never",
}
