/* Collection API tracker. Paste <script src="https://COLLECTOR/s.js" async></script> into a page: the collector's
 * URL comes from this script's own src, the site from data-site (default: the page's hostname). Events are queued,
 * sent in batches as text/plain (no CORS preflight) with fetch keepalive, or sendBeacon when the page is hidden;
 * failed fetches are retried with backoff (honouring Retry-After), each event carrying an eventId so that a
 * retry is deduplicated. API: window.collector.track(eventType, eventData), window.collector.flush(),
 * window.collector.consent({analytics: true|false}). With data-consent="required" on the script tag nothing is written
 * to localStorage or sessionStorage, and events carry no visitor or session id, until consent({analytics: true});
 * until then they are sent as not consented, and counted without identifiers (docs/enrichment.md#consent). */
(function (w, d) {
  "use strict";
  var script = d.currentScript;
  if (!script || w.collector) return;
  var endpoint = new URL("__COLLECT_PATH__", script.src).href;
  var site = script.getAttribute("data-site") || location.hostname;
  var LIMIT = 60000; // bytes per request: under the 64 KiB that sendBeacon and keepalive fetches may carry
  var MAX_EVENTS = 100, MAX_TRIES = 6, DELAY_MS = 1000;
  var queue = [], timer = 0, retries = [];

  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16)), h = [];
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    for (var i = 0; i < 16; i++) h.push((b[i] + 256).toString(16).slice(1));
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") + "-" +
      h.slice(8, 10).join("") + "-" + h.slice(10).join("");
  }
  function stored(store, key) {
    try { var v = store.getItem(key); if (!v) { v = uuid(); store.setItem(key, v); } return v; }
    catch (e) { return uuid(); } // storage blocked: ids last for this page only
  }
  // null: not decided (ids only outside data-consent="required"), true / false: what the visitor chose.
  var required = script.getAttribute("data-consent") === "required", consented = null;
  var visitorId, sessionId;
  function identify() { visitorId = stored(w.localStorage, "_ca_vid"); sessionId = stored(w.sessionStorage, "_ca_sid"); }
  function forget() {
    visitorId = sessionId = undefined;
    try { w.localStorage.removeItem("_ca_vid"); w.sessionStorage.removeItem("_ca_sid"); } catch (e) { /* blocked */ }
  }
  if (!required) identify();
  var size = function (s) { return new Blob([s]).size; };

  function track(eventType, eventData) {
    queue.push({
      eventType: String(eventType), eventId: uuid(), timestamp: new Date().toISOString(),
      url: location.href, path: location.pathname, referrer: d.referrer || undefined,
      eventData: eventData && typeof eventData === "object" ? eventData : undefined
    });
    if (queue.length >= MAX_EVENTS) flush(); else if (!timer) timer = setTimeout(flush, DELAY_MS);
  }

  // The queued events as request bodies in the seed's batch shape, each under LIMIT bytes.
  function bodies(events) {
    var out = [], part = [], used = 0, wrapper = 200 + site.length;
    events.forEach(function (e) {
      var n = size(JSON.stringify(e)) + 1;
      if (n + wrapper > LIMIT) return; // one event alone over the limit: the collector would refuse it anyway
      if (part.length && (used + n + wrapper > LIMIT || part.length >= MAX_EVENTS)) { out.push(part); part = []; used = 0; }
      part.push(e); used += n;
    });
    if (part.length) out.push(part);
    // The consent the events were tracked under: consent() flushes the queue before it changes.
    var consent = consented === null ? (required ? { analytics: false } : undefined) : { analytics: consented };
    var webdriver = navigator.webdriver === true || undefined; // automation (docs/enrichment.md#bots)
    return out.map(function (p) {
      return JSON.stringify({ eventType: "batch", siteId: site, sessionId: sessionId, visitorId: visitorId,
                              consent: consent, webdriver: webdriver, events: p });
    });
  }

  function send(body, tries) {
    fetch(endpoint, { method: "POST", body: body, keepalive: true, credentials: "omit",
                      headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        // Any 2xx is success: 200 by default, 202 with BUFFERED_SUCCESS_STATUS=202 (the body's `ack` tells which).
        // Other 4xx are the events' own fault: sending them again would be refused again.
        if (r.ok) return;
        if (r.status === 429 || r.status >= 500) retry(body, tries, r.headers.get("Retry-After"));
      }, function () { retry(body, tries, null); });
  }

  function retry(body, tries, after) {
    if (tries + 1 >= MAX_TRIES) return;
    var wait = after && !isNaN(after) ? after * 1000 : Math.min(30000, DELAY_MS * Math.pow(2, tries)) * (0.5 + Math.random());
    var item = { body: body, timer: 0 };
    retries.push(item);
    item.timer = setTimeout(function () { retries.splice(retries.indexOf(item), 1); send(body, tries + 1); }, wait);
  }

  function flush(unloading) {
    clearTimeout(timer); timer = 0;
    var pending = bodies(queue.splice(0));
    if (unloading) {
      // The page may be gone before a fetch settles: hand everything, pending retries too, to the browser.
      retries.splice(0).forEach(function (item) { clearTimeout(item.timer); pending.push(item.body); });
      pending.forEach(function (body) {
        if (!(navigator.sendBeacon && navigator.sendBeacon(endpoint, body))) send(body, MAX_TRIES - 1);
      });
    } else {
      pending.forEach(function (body) { send(body, 0); });
    }
  }

  function pageview() { track("pageview", { title: d.title }); }
  var push = history.pushState;
  history.pushState = function () { push.apply(history, arguments); pageview(); };
  w.addEventListener("popstate", pageview);
  d.addEventListener("click", function (ev) {
    var el = ev.target && ev.target.closest && ev.target.closest("a,button");
    if (el) track("click", { tag: el.tagName.toLowerCase(), id: el.id || undefined,
                             text: (el.textContent || "").trim().slice(0, 100), href: el.href || undefined });
  }, true);
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") flush(true); });
  w.addEventListener("pagehide", function () { flush(true); });

  // The visitor's choice from the site's consent banner: events queued so far go out under the previous state.
  function consent(choice) {
    var analytics = !!(choice && choice.analytics === true);
    flush(false);
    consented = analytics;
    if (analytics) identify(); else forget();
  }

  w.collector = { track: track, flush: function () { flush(false); }, consent: consent };
  pageview();
})(window, document);
