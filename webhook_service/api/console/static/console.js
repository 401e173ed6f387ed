// The console: reads /messages, /feed, /stats, /stats/timeline and /stats/forwarding like any
// client and renders every value with textContent (never as HTML). No framework, no build.
"use strict";

const TOKEN_KEY = "webhook-console-token";
const TEXT_FOLD_CHARS = 280;
const LIVE_WAIT_SECONDS = 25;
const LIVE_KEEP = 200;
// The live view opens with the latest messages stored, then follows the feed from there.
const LIVE_OPEN = 20;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

// --- fetching ----------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, signal: options.signal, cache: "no-store" });
  const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (response.status === 401) {
    askForToken(errorText(body));
    throw new Unauthorized(errorText(body));
  }
  if (!response.ok) {
    const error = new Error(errorText(body));
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 2;
    throw error;
  }
  return body;
}

function errorText(body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).slice(1).join(".") || "query"}: ${item.msg}`).join("; ");
  }
  return String(detail || "unexpected answer");
}

function query(parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  return search.toString();
}

// --- tokens ------------------------------------------------------------------------------

let afterToken = null;

function askForToken(message) {
  $("token-prompt").hidden = false;
  $("token-error").textContent = token() ? `The token was refused: ${message}` : "";
  $("token-input").focus();
}

function setUpToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-prompt").hidden = true;
    $("forget-token").hidden = false;
    if (afterToken) afterToken();
  });
  $("forget-token").hidden = !token();
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.reload();
  });
}

// --- views -------------------------------------------------------------------------------

const views = {};

function setUpTabs() {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  const select = (tab) => {
    for (const other of tabs) {
      const chosen = other === tab;
      other.setAttribute("aria-selected", String(chosen));
      other.tabIndex = chosen ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !chosen;
    }
    const name = tab.id.replace("tab-", "");
    history.replaceState(null, "", `#${name}`);
    showView(name);
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      next.focus();
      select(next);
    });
  });
  const start = tabs.find((tab) => `#${tab.id.replace("tab-", "")}` === window.location.hash) || tabs[0];
  select(start);
}

function showView(name) {
  afterToken = () => views[name].show();
  views[name].show();
}

// --- a message as elements ---------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function messageItem(message) {
  const item = element("li", "message");
  item.dataset.messageId = message.message_id;
  const head = element("div", "head");
  head.append(
    element("span", "from", message.from),
    element("span", "arrow", " → "),
    element("span", "to", message.to),
    element("span", "id", message.message_id),
  );
  const times = element("div", "times");
  const sent = element("time", "ts", `sent ${message.ts}`);
  sent.dateTime = message.ts;
  const stored = element("time", "created", `stored ${message.created_at}`);
  stored.dateTime = message.created_at;
  times.append(sent, stored);
  item.append(head, times);
  if (message.text === null) {
    item.append(element("p", "text none", "(no text)"));
  } else if (message.text.length > TEXT_FOLD_CHARS) {
    const folded = element("details", "text");
    folded.append(element("summary", "", `${message.text.slice(0, TEXT_FOLD_CHARS)}…`), element("p", "", message.text));
    item.append(folded);
  } else {
    item.append(element("p", "text", message.text));
  }
  return item;
}

// --- messages ----------------------------------------------------------------------------

const browser = { filters: {}, cursor: null, page: 1, loaded: false };

views.messages = {
  show() {
    if (!browser.loaded) loadMessages(true);
  },
};

function setUpMessages() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadMessages(true);
  });
  $("next-page").addEventListener("click", () => loadMessages(false));
}

async function loadMessages(fromStart) {
  if (fromStart) {
    browser.filters = Object.fromEntries(new FormData($("filters")).entries());
    browser.cursor = null;
  }
  const pageNumber = fromStart ? 1 : browser.page + 1;
  const { order, ...filters } = browser.filters;
  $("messages-error").textContent = "";
  try {
    const page = order === "newest" ? await newestPage(filters, pageNumber) : await oldestPage(filters);
    browser.loaded = true;
    browser.page = pageNumber;
    $("message-list").replaceChildren(...page.data.map(messageItem));
    const noun = page.total === 1 ? "message" : "messages";
    $("messages-status").textContent = `${page.total.toLocaleString("en")} ${noun} · page ${pageNumber}`;
    $("next-page").hidden = !page.more;
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("messages-error").textContent = error.message;
  }
}

// /messages order (ts, then message_id), page after page by its cursor.
async function oldestPage(filters) {
  const page = await api(`/messages?${query({ ...filters, cursor: browser.cursor })}`);
  browser.cursor = page.next_cursor;
  return { data: page.data, total: page.total, more: page.next_cursor !== null };
}

// The same order from its end: the total first, then the page that many messages from the
// end, by offset, shown last first.
async function newestPage(filters, pageNumber) {
  const limit = Number(filters.limit) || 50;
  const { total } = await api(`/messages?${query({ ...filters, limit: 1 })}`);
  const end = Math.max(0, total - (pageNumber - 1) * limit);
  const offset = Math.max(0, end - limit);
  if (end === 0) return { data: [], total, more: false };
  const page = await api(`/messages?${query({ ...filters, offset, limit: end - offset })}`);
  return { data: page.data.slice().reverse(), total, more: offset > 0 };
}

// --- live --------------------------------------------------------------------------------

const live = { after: null, running: false, paused: false, controller: null, started: false, shown: new Set() };

views.live = {
  show() {
    if (!live.started) {
      live.started = true;
      openLive();
    }
  },
};

// The feed's current end first, then the latest messages stored: a message stored between
// the two is in both, and shown once.
async function openLive() {
  try {
    if (live.after === null) {
      const end = await api(`/feed?${query({ after: "latest", wait: 0, limit: 1 })}`);
      const { total } = await api("/messages?limit=1");
      const offset = Math.max(0, total - LIVE_OPEN);
      const latest = total === 0 ? [] : (await api(`/messages?${query({ offset, limit: LIVE_OPEN })}`)).data;
      live.after = end.next;
      showLive(latest);
    }
  } catch (error) {
    if (error instanceof Unauthorized) {
      live.started = false;
      return;
    }
    $("live-error").textContent = error.message;
    live.after = live.after === null ? "latest" : live.after;
  }
  runLive();
}

function showLive(messages) {
  const list = $("live-list");
  for (const message of messages) {
    if (live.shown.has(message.message_id)) continue;
    live.shown.add(message.message_id);
    list.prepend(messageItem(message));
  }
  while (list.children.length > LIVE_KEEP) {
    live.shown.delete(list.lastChild.dataset.messageId);
    list.lastChild.remove();
  }
}

function setUpLive() {
  $("live-toggle").addEventListener("click", () => {
    live.paused = !live.paused;
    $("live-toggle").setAttribute("aria-pressed", String(live.paused));
    $("live-toggle").textContent = live.paused ? "Resume" : "Pause";
    if (live.paused) {
      if (live.controller) live.controller.abort();
      $("live-status").textContent = "Paused: messages stored meanwhile follow when you resume.";
    } else {
      runLive();
    }
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function runLive() {
  if (live.running) return;
  live.running = true;
  try {
    while (!live.paused) {
      $("live-status").textContent = "Following the feed: new messages appear here as they are stored.";
      live.controller = new AbortController();
      let page;
      try {
        page = await api(`/feed?${query({ after: live.after, wait: LIVE_WAIT_SECONDS, limit: 100 })}`, {
          signal: live.controller.signal,
        });
      } catch (error) {
        if (live.paused) break;
        if (error instanceof Unauthorized) {
          live.started = false;
          break;
        }
        if (error.status === 429) {
          // The worker holds as many waiting readers as it may: come back when it says.
          $("live-status").textContent = `Many readers are following the feed; looking again in ${error.retryAfter} s.`;
        } else {
          $("live-error").textContent = `${error.message}; trying again`;
        }
        await sleep((error.retryAfter || 2) * 1000);
        continue;
      }
      $("live-error").textContent = "";
      live.after = page.next;
      showLive(page.data);
    }
  } finally {
    live.running = false;
  }
}

// --- stats -------------------------------------------------------------------------------

views.stats = {
  show() {
    loadStats();
  },
};

function setUpStats() {
  $("timeline-bucket").addEventListener("change", () => loadTimeline());
}

async function loadStats() {
  $("stats-error").textContent = "";
  try {
    const stats = await api("/stats");
    const numbers = $("stats-numbers");
    numbers.replaceChildren();
    for (const [label, value, className] of [
      ["Messages", stats.total_messages.toLocaleString("en"), ""],
      ["Senders", stats.senders_count.toLocaleString("en"), ""],
      ["First ts", stats.first_message_ts || "none", "instant"],
      ["Last ts", stats.last_message_ts || "none", "instant"],
    ]) {
      const group = element("div");
      group.append(element("dt", "", label), element("dd", className, value));
      numbers.append(group);
    }
    drawSenders(stats.messages_per_sender);
    await loadTimeline();
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("stats-error").textContent = error.message;
  }
}

function svgNode(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawSenders(senders) {
  const chart = $("senders-chart");
  const width = 600;
  const row = 26;
  const label = 150;
  const height = Math.max(row, senders.length * row);
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();
  const most = Math.max(1, ...senders.map((sender) => sender.count));
  senders.forEach((sender, index) => {
    const y = index * row;
    const bar = Math.max(2, ((width - label - 70) * sender.count) / most);
    const group = svgNode("g", { class: "sender", "data-from": sender.from, "data-count": sender.count });
    group.append(
      svgNode("text", { x: 0, y: y + 17, class: "label" }, sender.from),
      svgNode("rect", { x: label, y: y + 4, width: bar, height: row - 8, rx: 3, class: "bar" }),
      svgNode("text", { x: label + bar + 6, y: y + 17, class: "value" }, sender.count.toLocaleString("en")),
    );
    chart.append(group);
  });
  if (senders.length === 0) chart.append(svgNode("text", { x: 0, y: 17, class: "label" }, "No messages yet"));
}

async function loadTimeline() {
  const bucket = $("timeline-bucket").value;
  const hours = bucket === "hour" ? 48 : 90 * 24;
  const since = new Date(Date.now() - hours * 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  try {
    const timeline = await api(`/stats/timeline?${query({ bucket, since })}`);
    drawTimeline(timeline, since);
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("stats-error").textContent = error.message;
  }
}

function drawTimeline(timeline, since) {
  const chart = $("timeline-chart");
  const width = 600;
  const height = 180;
  const bottom = 20;
  const stepMs = (timeline.bucket === "hour" ? 3600 : 86400) * 1000;
  const first = Math.floor(Date.parse(since) / stepMs) * stepMs;
  const slots = Math.max(1, Math.ceil((Date.now() - first) / stepMs));
  const slot = width / slots;
  const most = Math.max(1, ...timeline.points.map((point) => point.count));
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren(svgNode("line", { x1: 0, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  for (const point of timeline.points) {
    const index = Math.round((Date.parse(point.start) - first) / stepMs);
    const barHeight = Math.max(1, ((height - bottom - 10) * point.count) / most);
    const rect = svgNode("rect", {
      x: index * slot + slot * 0.1,
      y: height - bottom - barHeight,
      width: Math.max(1, slot * 0.8),
      height: barHeight,
      class: "point",
      "data-start": point.start,
      "data-count": point.count,
    });
    rect.append(svgNode("title", {}, `${point.start}: ${point.count.toLocaleString("en")}`));
    chart.append(rect);
  }
  chart.append(
    svgNode("text", { x: 0, y: height - 4, class: "label" }, new Date(first).toISOString().slice(0, 16)),
    svgNode("text", { x: width, y: height - 4, class: "label end" }, "now"),
    svgNode("text", { x: 0, y: 10, class: "label" }, `max ${most.toLocaleString("en")}`),
  );
  const total = timeline.points.reduce((sum, point) => sum + point.count, 0);
  $("timeline-status").textContent =
    `${total.toLocaleString("en")} stored in ${timeline.points.length} of ${slots} ${timeline.bucket}s shown`;
}

// --- forwarding --------------------------------------------------------------------------

views.forwarding = {
  show() {
    loadForwarding();
  },
};

function duration(seconds) {
  if (seconds < 1) return "up to date";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function loadForwarding() {
  $("forwarding-error").textContent = "";
  try {
    const { destinations } = await api("/stats/forwarding");
    const table = $("destinations");
    table.hidden = destinations.length === 0;
    $("forwarding-status").textContent =
      destinations.length === 0
        ? "No forwarder has served a destination on this database (webhook-service forward)."
        : `${destinations.length} destination${destinations.length === 1 ? "" : "s"}`;
    table.tBodies[0].replaceChildren(
      ...destinations.map((destination) => {
        const row = element("tr");
        row.dataset.destination = destination.name;
        row.append(
          element("th", "", destination.name),
          element("td", "", duration(destination.lag_seconds)),
          element("td", "", destination.pending.toLocaleString("en")),
          element("td", destination.dead_letters ? "dead" : "", destination.dead_letters.toLocaleString("en")),
        );
        row.firstChild.scope = "row";
        return row;
      }),
    );
    $("owed").replaceChildren(...destinations.flatMap(owedTables));
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("forwarding-error").textContent = error.message;
  }
}

// A destination's latest dead letters and the deliveries due soonest, read-only: the
// command line (deliveries, replay) acts on them.
function owedTables(destination) {
  const tables = [];
  const lists = [
    ["dead", `Dead letters of ${destination.name}`, destination.latest_dead_letters, destination.dead_letters],
    ["waiting", `Waiting at ${destination.name}`, destination.waiting, destination.pending],
  ];
  for (const [kind, title, items, count] of lists) {
    if (items.length === 0) continue;
    const section = element("section", "owed");
    section.dataset.destination = destination.name;
    section.dataset.kind = kind;
    const shown = items.length < count ? ` (${items.length} of ${count.toLocaleString("en")})` : "";
    const table = element("table");
    const head = element("tr");
    const last = kind === "dead" ? "Died at" : "Next attempt";
    for (const name of ["Message", "Attempts", "Last outcome", last]) {
      const cell = element("th", "", name);
      cell.scope = "col";
      head.append(cell);
    }
    table.createTHead().append(head);
    const body = table.createTBody();
    for (const item of items) {
      const row = element("tr");
      const outcome = item.last_status !== null ? `HTTP ${item.last_status}` : item.last_error || "not tried yet";
      row.append(
        element("td", "message-id", item.message_id ?? "(removed)"),
        element("td", "", String(item.attempts)),
        element("td", "", outcome),
        element("td", "", (kind === "dead" ? item.last_attempt_at : item.next_attempt_at) || "-"),
      );
      body.append(row);
    }
    section.append(element("h2", "", title + shown), element("div", "scroll"));
    section.lastChild.append(table);
    tables.push(section);
  }
  return tables;
}

// --- start -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  setUpToken();
  setUpMessages();
  setUpLive();
  setUpStats();
  setUpTabs();
});
