// The chat page: one WebSocket to the chat server, a stream of messages grouped by sender and
// minute, joins and leaves as quiet lines, and the room's people.
//
// Rules kept throughout:
// - Everything shown comes from textContent / createElement; received data never meets innerHTML.
// - The page has one state at a time (see STATES); render() derives every control from it.
// - What goes on the wire for a typed message is built in one place, outgoingFrame(); what a
//   received text means (sender and text) is read in one place, splitSender().
// - A connection that was open and drops without the Disconnect button is retried with
//   backoff: 1 s, 2 s, 4 s ... capped at 30 s. A first connection that fails is explained and
//   not retried: the URL is more likely wrong than the server briefly away.
"use strict";

(function () {
  // The server's WebSocket path (its first --path), as the server wrote it into the page.
  const pathMeta = document.querySelector('meta[name="websocket-path"]');
  const CHAT_PATH = (pathMeta && pathMeta.content.startsWith("/")) ? pathMeta.content : "/";
  const HANDLE_MAX = 32;
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 30000;
  const MAX_ITEMS = 1000; // messages and lines kept in the stream; the oldest go first
  const NEAR_BOTTOM_PX = 48; // a reader this close to the end is kept at the end
  // Our server speaks this subprotocol to us (and plain text to everyone else): text frames
  // are JSON; with --history a room's messages carry ids, so a reconnect asks for what came
  // after the last one shown (?after=ID) and nothing is lost or shown twice; and who is in
  // the room comes as a list, then as changes (see onTagged).
  const TAGGED = "chat.history.v1";
  const SEEN_MAX = 5000; // message ids remembered against duplicates
  const TITLE = document.title;

  // closed: no socket, no retry pending.    connecting: a socket is opening.
  // open: chatting.                          closing: the Disconnect button's close handshake.
  // waiting: an unexpected drop; a retry is scheduled.
  const STATES = ["closed", "connecting", "open", "closing", "waiting"];

  // RFC 6455 §7.4.1 and the IANA registry, in words a user can act on.
  const CLOSE_NAMES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "abnormal closure, no close frame",
    1007: "invalid message data",
    1008: "policy violation",
    1009: "message too big",
    1010: "missing extension",
    1011: "server error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failed",
  };

  const NO_WEBSOCKET =
    "Sorry, your browser does not support WebSocket, so this chat cannot work here. " +
    "Please use a current version of Firefox, Chrome, Edge or Safari.";

  const ui = {};
  for (const id of ["title", "error", "status", "server", "server-hint", "handle", "handle-hint",
                    "connect", "connect-intro", "disconnect", "console", "empty", "message",
                    "send", "connect-form", "send-form", "session", "room", "me", "people",
                    "people-count", "people-list"]) {
    ui[id] = document.getElementById(id);
  }
  ui.stream = ui.console.parentElement;

  let state = "closed";
  let socket = null;
  // From the Connect press until closed: {url, handle, opened, lastId, seen, people, replay,
  // earlierShown}. people: a Map id -> name once the server has said who is here.
  let session = null;
  let retryDelay = RETRY_FIRST_MS;
  let retryAt = 0;
  let retryTimer = 0;
  let countdownTimer = 0;
  let attempt = 0;
  let lostStatus = ""; // the last close, in words, for the status line while retrying
  let lastFocused = null;
  let fromFile = false; // no server to guess the URL from (file://): the page asks for it
  let lastGroup = null; // the message group a message from the same sender, same minute joins
  let items = 0; // messages and lines in the stream
  let stuck = true; // the reader is at the end of the stream, and stays there as it grows

  // ---- text helpers -------------------------------------------------------------------------

  function codePoints(text) {
    return Array.from(text).length;
  }

  function handleProblem(raw) {
    const handle = raw.trim();
    if (!handle) return "Enter a handle (your name in the chat) to connect.";
    const n = codePoints(handle);
    if (n > HANDLE_MAX) return `Your handle is ${n} characters long; ${HANDLE_MAX} at most.`;
    return "";
  }

  function describeClose(event) {
    const name = CLOSE_NAMES[event.code];
    let text = `code ${event.code}` + (name ? `, ${name}` : "");
    if (event.reason) text += `, reason “${event.reason}”`;
    return text;
  }

  // The server's URL as typed, made into a ws:// or wss:// URL, or a sentence saying why not.
  function parseServerUrl(raw) {
    let text = raw.trim();
    if (!text) {
      return { problem: "Enter the chat server's WebSocket URL, for example ws://127.0.0.1:8080/." };
    }
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = "ws://" + text;
    let url;
    try {
      url = new URL(text);
    } catch (_) {
      return { problem: `“${raw.trim()}” is not a URL. It should look like ws://127.0.0.1:8080/.` };
    }
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      return { problem: `The server URL must start with ws:// or wss://, not ${url.protocol}//.` };
    }
    url.hash = ""; // a WebSocket URL may not have a fragment
    return { href: url.href };
  }

  // The room of ?room=NAME: a path on the server (under CHAT_PATH; CHAT_PATH by default,
  // the lobby "/" unless the server has a --path).
  function chosenRoom() {
    const name = (new URLSearchParams(window.location.search).get("room") || "").trim();
    const bare = name.replace(/^\/+/, "");
    const base = CHAT_PATH.endsWith("/") ? CHAT_PATH : CHAT_PATH + "/";
    return bare ? base + bare.split("/").map(encodeURIComponent).join("/") : CHAT_PATH;
  }

  // What a WebSocket URL's path says about its room: "/" is the lobby.
  function roomPath(href) {
    try {
      return decodeURIComponent(new URL(href).pathname);
    } catch (_) {
      return "/";
    }
  }

  function roomOf(href) {
    const path = roomPath(href);
    return path === "/" ? "the lobby (/)" : `room ${path}`;
  }

  function defaultServerUrl() {
    const params = new URLSearchParams(window.location.search);
    const given = params.get("server");
    if (given && given.trim()) return given.trim();
    const { protocol, host } = window.location;
    if ((protocol === "http:" || protocol === "https:") && host) {
      return (protocol === "https:" ? "wss://" : "ws://") + host + chosenRoom();
    }
    return ""; // file:// and the like: there is no server to guess
  }

  function two(n) {
    return String(n).padStart(2, "0");
  }

  function clock(date) {
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  }

  // A group's time: HH:MM today, with the date before it on another day.
  function shortTime(date) {
    const hm = `${two(date.getHours())}:${two(date.getMinutes())}`;
    if (date.toDateString() === new Date().toDateString()) return hm;
    return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${hm}`;
  }

  function minuteOf(date) {
    return date ? Math.floor(date.getTime() / 60000) : -1;
  }

  // ---- the wire: the one place each direction is read or built ------------------------------

  // A typed message as it goes out. Today every client sends "handle: text" and the server
  // passes it on as it is. When the server takes the handle from ?handle= (issue 20, item 1)
  // this returns the text alone.
  function outgoingFrame(text) {
    return `${session.handle}: ${text}`;
  }

  // A received chat text: "handle: text" shows the handle apart; anything else (another
  // client's line, a callback's notice) shows whole, with no sender.
  function splitSender(text) {
    const cut = text.indexOf(": ");
    const who = cut > 0 ? text.slice(0, cut) : "";
    if (who && codePoints(who) <= HANDLE_MAX && !who.includes("\n")) {
      return { who, text: text.slice(cut + 2) };
    }
    return { who: "", text };
  }

  // A message's own time, if the server sent one ("time": Unix seconds); today's server
  // sends none, so live messages show their arrival and replayed ones no time at all.
  function sentAt(value) {
    return typeof value.time === "number" && Number.isFinite(value.time)
      ? new Date(value.time * 1000) : null;
  }

  // ---- the stream ---------------------------------------------------------------------------

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  function timeElement(date, text) {
    const node = document.createElement("time");
    node.dateTime = date.toISOString();
    node.textContent = text;
    node.title = date.toLocaleString();
    return node;
  }

  function nearBottom() {
    const c = ui.console;
    return c.scrollHeight - c.scrollTop - c.clientHeight < NEAR_BOTTOM_PX;
  }

  // Append one element to the stream (weight: the messages and lines it holds), drop the
  // oldest past MAX_ITEMS, and keep a reader who was at the end at the end.
  function append(node, weight, { stick = false } = {}) {
    const follow = stick || stuck || nearBottom();
    if (node.parentNode !== ui.console) ui.console.append(node);
    items += weight;
    while (items > MAX_ITEMS && ui.console.firstElementChild) {
      const first = ui.console.firstElementChild;
      items -= first.classList.contains("group")
        ? first.querySelectorAll(".msg").length : 1;
      if (lastGroup && lastGroup.node === first) lastGroup = null;
      first.remove();
    }
    updateEmpty();
    if (follow) toEnd();
  }

  function toEnd() {
    ui.console.scrollTop = ui.console.scrollHeight;
    stuck = true;
  }

  // One quiet line: the page's own news (info, error) or someone joining or leaving.
  function addLine(kind, text) {
    const line = document.createElement("p");
    line.className = "line " + kind;
    const now = new Date();
    line.append(span("text", text), " ", timeElement(now, clock(now)));
    lastGroup = null;
    append(line, 1);
    return line;
  }

  // One chat message, as text. Consecutive messages of one sender in one minute share a
  // group, whose head (name and time) is drawn once; a screen reader hears each message
  // with its sender, from the live region.
  function addMessage(who, text, { time = new Date(), earlier = false } = {}) {
    const mine = who !== "" && session !== null && who === session.handle;
    const minute = minuteOf(time);
    let group = lastGroup;
    if (!group || group.who !== who || group.minute !== minute || group.earlier !== earlier) {
      const node = document.createElement("div");
      node.className = "group" + (mine ? " mine" : "") + (earlier ? " earlier" : "");
      const head = document.createElement("div");
      head.className = "group-head";
      head.setAttribute("aria-hidden", "true");
      if (who) head.append(span("who", who));
      if (mine) head.append(span("you", "(you)"));
      if (time) head.append(timeElement(time, shortTime(time)));
      node.append(head);
      group = { node, who, minute, earlier };
    }
    const msg = document.createElement("p");
    msg.className = "msg";
    msg.dataset.who = who;
    if (time) msg.title = clock(time);
    if (who) msg.append(span("sr-only", `${who}: `));
    msg.append(span("text", text));
    group.node.append(msg);
    lastGroup = group;
    append(group.node, 1, { stick: mine });
  }

  // The line between a room's history, replayed on joining, and what is said from now on.
  function addDivider() {
    const line = document.createElement("div");
    line.className = "divider";
    line.setAttribute("role", "separator");
    const arrow = span("arrow", "↑");
    arrow.setAttribute("aria-hidden", "true");
    line.append(arrow, span("text", "earlier messages"));
    line.setAttribute("aria-label", "Above: earlier messages, from before you joined. " +
                                    "Below: new messages.");
    lastGroup = null;
    append(line, 1);
  }

  // What the stream says when it holds no message yet: what to do next.
  function updateEmpty() {
    const hasMessages = ui.console.querySelector(".msg") !== null;
    ui.stream.hidden = state === "closed" && ui.console.childElementCount === 0;
    const show = !hasMessages && state === "open";
    ui.empty.hidden = !show;
    if (!show) return;
    const room = roomOf(session.url);
    const alone = session.people !== null && session.people.size <= 1;
    ui.empty.replaceChildren();
    if (alone) {
      ui.empty.append(`Nobody else is in ${room} yet. `);
      const link = shareLink();
      if (link) {
        ui.empty.append("Open ");
        const a = document.createElement("a");
        a.id = "share";
        a.href = link;
        a.textContent = link;
        ui.empty.append(a, " in another tab or send it to someone; then ");
      }
      ui.empty.append("type a message below and press Enter.");
    } else {
      ui.empty.append(`No messages yet in ${room}. Type one below and press Enter: ` +
                      "everyone here sees it.");
    }
  }

  // This page's address for the same room, without the handle (the next person has theirs).
  function shareLink() {
    const { protocol } = window.location;
    if (protocol !== "http:" && protocol !== "https:") return "";
    const url = new URL(window.location.href);
    url.searchParams.delete("handle");
    url.hash = "";
    return url.href;
  }

  // ---- the room's people --------------------------------------------------------------------

  function renderPeople() {
    const people = session && session.people;
    ui.people.hidden = !people || state !== "open";
    if (!people) return;
    ui["people-count"].textContent = `${people.size} here`;
    ui["people-list"].replaceChildren();
    let meShown = false;
    for (const name of people.values()) {
      const item = document.createElement("li");
      item.textContent = name;
      if (!meShown && name === session.handle) {
        item.append(" ", span("you", "(you)"));
        meShown = true;
      }
      ui["people-list"].append(item);
    }
  }

  // The whole list: once when joining, on today's server after every change. The first list
  // of a session only fills the people list; any later one (a reconnect, or today's server)
  // shows who came and went since, by name.
  function onPresence(list) {
    const next = new Map();
    list.forEach((entry, i) => {
      if (entry !== null && typeof entry === "object") {
        next.set(String(entry.id), String(entry.name));
      } else {
        next.set(`#${i}`, String(entry)); // today's server sends names alone
      }
    });
    if (session.people !== null) {
      const before = countNames(session.people);
      const after = countNames(next);
      for (const [name, n] of after) {
        for (let k = before.get(name) || 0; k < n; k++) addLine("presence", `${name} joined`);
      }
      for (const [name, n] of before) {
        for (let k = after.get(name) || 0; k < n; k++) addLine("presence", `${name} left`);
      }
    }
    session.people = next;
    endReplay();
    renderPeople();
    updateEmpty();
  }

  function countNames(people) {
    const counts = new Map();
    for (const name of people.values()) counts.set(name, (counts.get(name) || 0) + 1);
    return counts;
  }

  // A change: {"joined": [{"id", "name"}...], "left": [id...]}. Joins first, so someone who
  // came and went within one change is shown doing both. Only real changes are lines: a
  // newcomer's list is the end of the pass it joined in, and that pass's delta, which comes
  // next, names the newcomer (and anyone who came in the same pass) again.
  function onPresenceDelta(delta) {
    const people = session.people;
    if (people === null) return; // nothing to apply it to before the whole list
    for (const entry of Array.isArray(delta.joined) ? delta.joined : []) {
      if (entry === null || typeof entry !== "object") continue;
      const id = String(entry.id);
      const name = String(entry.name);
      if (!people.has(id)) addLine("presence", `${name} joined`);
      people.set(id, name);
    }
    for (const id of Array.isArray(delta.left) ? delta.left : []) {
      const name = people.get(String(id));
      if (name === undefined) continue;
      people.delete(String(id));
      addLine("presence", `${name} left`);
    }
    renderPeople();
    updateEmpty();
  }

  // ---- errors -------------------------------------------------------------------------------

  function showError(message, checks) {
    ui.error.replaceChildren();
    const p = document.createElement("p");
    p.textContent = message;
    ui.error.append(p);
    if (checks && checks.length) {
      const list = document.createElement("ul");
      for (const check of checks) {
        const item = document.createElement("li");
        item.textContent = check;
        list.append(item);
      }
      ui.error.append(list);
    }
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.replaceChildren();
  }

  function connectionChecks(url) {
    let port = "";
    let host = "";
    try {
      const parsed = new URL(url);
      host = parsed.hostname;
      port = parsed.port || (parsed.protocol === "wss:" ? "443" : "80");
    } catch (_) { /* already validated; keep the generic wording */ }
    const loopback = host === "localhost" || host === "[::1]" || host.startsWith("127.");
    const listen = loopback || !host ? "127.0.0.1" : "0.0.0.0";
    const checks = [
      `Is the URL right, including the port${port ? ` (${port})` : ""} and the path?`,
      `Is the server running? Start it with: python3 server.py ${listen} ${port || "8080"}`,
      "A server started on 127.0.0.1 only accepts connections from its own machine. " +
        "To reach it from another device, start it on 0.0.0.0 and use that machine's address" +
        (host === "0.0.0.0" ? "; 0.0.0.0 is for listening, connect to 127.0.0.1 or the machine's address." : "."),
    ];
    if (url.startsWith("wss:")) checks.push("wss:// needs a server that speaks TLS; try ws:// otherwise.");
    return checks;
  }

  // ---- state --------------------------------------------------------------------------------

  function setState(next) {
    if (!STATES.includes(next)) throw new Error("unknown state " + next);
    const previous = state;
    state = next;
    render(previous);
  }

  function statusText() {
    switch (state) {
      case "connecting":
        return attempt > 0 ? `Reconnecting to ${session.url} (attempt ${attempt})…`
                           : `Connecting to ${session.url}…`;
      case "open":
        return `Connected to ${session.url}`;
      case "closing":
        return "Disconnecting…";
      case "waiting": {
        const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        return `${lostStatus} Reconnecting in ${seconds} s…`;
      }
      default:
        return "Not connected";
    }
  }

  function render(previous) {
    const closed = state === "closed";
    const live = state === "open" || state === "connecting" || state === "waiting";

    // Connecting folds the form away into the header: handle, room, people, Disconnect.
    ui["connect-form"].hidden = !closed;
    ui.session.hidden = closed;
    ui["send-form"].hidden = closed;
    document.body.dataset.state = state;
    if (session) {
      const path = roomPath(session.url);
      if (path === "/") ui.room.replaceChildren("Lobby");
      else ui.room.replaceChildren(span("room-word", "Room "), path);
      ui.room.title = ui.room.textContent;
      ui.me.textContent = session.handle;
      document.title = `${session.handle} in ${path === "/" ? "the lobby" : path} · ${TITLE}`;
    } else {
      document.title = TITLE;
    }
    ui.disconnect.textContent = state === "connecting" && !session.opened ? "Cancel" : "Disconnect";

    ui.server.disabled = !closed;
    ui.handle.disabled = !closed;
    ui.connect.disabled = !closed;
    ui.disconnect.disabled = !live; // also stops a pending retry
    ui.send.disabled = state !== "open";
    // The message field stays usable while reconnecting, so a draft is not lost.
    ui.message.disabled = !live;

    ui.status.textContent = statusText();
    ui.status.dataset.state = state;
    renderHandleHint();
    renderPeople();
    updateEmpty();
    fixFocus(previous);
  }

  function renderHandleHint() {
    const problem = handleProblem(ui.handle.value);
    const tooLong = problem !== "" && ui.handle.value.trim() !== "";
    ui["handle-hint"].textContent = tooLong ? problem : `Your name in the chat, 1–${HANDLE_MAX} characters.`;
    ui["handle-hint"].classList.toggle("warning", tooLong);
    if (tooLong) ui.handle.setAttribute("aria-invalid", "true");
    else ui.handle.removeAttribute("aria-invalid");
  }

  function renderIntro() {
    const parsed = parseServerUrl(ui.server.value);
    ui["connect-intro"].textContent = parsed.problem
      ? "Enter the chat server's address and a handle, then Connect."
      : `Pick a handle and join ${roomOf(parsed.href)}.`;
  }

  function shown(element) {
    return element.getClientRects().length > 0;
  }

  // Keep keyboard users somewhere useful when the control they were on is hidden or disabled.
  function fixFocus(previous) {
    const active = document.activeElement;
    const lost = !active || active === document.body || active.disabled || !shown(active);
    const wasOurs = lastFocused && lastFocused.closest && lastFocused.closest("main");
    if (!wasOurs) return; // focus is elsewhere (another frame, the browser): leave it
    if (state === "open" && previous !== "open" &&
        (lost || ui["connect-form"].contains(active) || active === ui.disconnect)) {
      ui.message.focus();
      return;
    }
    if (!lost) return;
    if (state === "closed") ui.connect.focus();
    else ui.disconnect.focus();
  }

  // ---- connection ---------------------------------------------------------------------------

  function startSession() {
    if (state !== "closed") return;
    clearError();
    const problem = handleProblem(ui.handle.value);
    if (problem) {
      showError(problem);
      ui.handle.setAttribute("aria-invalid", "true");
      ui.handle.focus();
      return;
    }
    const parsed = parseServerUrl(ui.server.value);
    if (parsed.problem) {
      showError(parsed.problem);
      ui.server.setAttribute("aria-invalid", "true");
      ui.server.focus();
      return;
    }
    ui.server.removeAttribute("aria-invalid");
    ui.server.value = parsed.href;
    session = { url: parsed.href, handle: ui.handle.value.trim(), opened: false,
                lastId: "", seen: new Set(), people: null, replay: false, earlierShown: false };
    retryDelay = RETRY_FIRST_MS;
    attempt = 0;
    openSocket();
  }

  function openSocket() {
    let ws;
    try {
      ws = new WebSocket(socketUrl(session), ownServer(session.url) ? [TAGGED] : []);
    } catch (error) {
      // SyntaxError (bad URL) or SecurityError (ws:// from an https page, a blocked port).
      const why = window.location.protocol === "https:" && session.url.startsWith("ws:")
        ? "A page loaded over https may only connect to wss:// URLs."
        : error.message;
      showError(`Cannot connect to ${session.url}: ${why}`, connectionChecks(session.url));
      addLine("error", `Cannot connect to ${session.url}: ${why}`);
      session = null;
      setState("closed");
      return;
    }
    ws.binaryType = "arraybuffer";
    socket = ws;
    setState("connecting");

    ws.addEventListener("open", () => {
      if (ws !== socket) return;
      const again = session.opened;
      session.opened = true;
      // A first join replays the room's history before anything live: those messages are
      // "earlier" until the server says who is here (it does so after the replay).
      session.replay = !again;
      retryDelay = RETRY_FIRST_MS;
      attempt = 0;
      clearError();
      addLine("info", `${again ? "Reconnected" : "Connected"} to ${session.url} as ${session.handle}, in ${roomOf(session.url)}.`);
      setState("open");
    });

    ws.addEventListener("message", (event) => {
      if (ws !== socket) return;
      if (typeof event.data !== "string") {
        addLine("info", `(a binary message of ${event.data.byteLength} bytes, not shown)`);
      } else if (ws.protocol === TAGGED) {
        onTagged(event.data);
      } else {
        const { who, text } = splitSender(event.data);
        addMessage(who, text);
      }
    });

    // The error event carries no detail by design; the close event that follows has the code.
    ws.addEventListener("close", (event) => {
      if (ws !== socket) return;
      socket = null;
      onClose(event);
    });
  }

  // The server this page came from speaks TAGGED; another may not, and a browser fails a
  // handshake whose answer names no subprotocol when one was offered.
  function ownServer(href) {
    try {
      const { protocol, host } = window.location;
      return (protocol === "http:" || protocol === "https:") && new URL(href).host === host;
    } catch (_) {
      return false;
    }
  }

  // The URL of one attempt: our handle (for the room's people list) and, on a reconnect,
  // the id of the last message shown.
  function socketUrl(current) {
    let url;
    try {
      url = new URL(current.url);
    } catch (_) {
      return current.url;
    }
    url.searchParams.set("handle", current.handle);
    if (current.lastId) url.searchParams.set("after", current.lastId);
    else url.searchParams.delete("after");
    return url.href;
  }

  // A TAGGED text frame (websocket/chat/rooms.py): {"id", "text"} (a room's message, with
  // --history), {"text"}, {"notice": "gap"}, {"presence": [...]} (who is here) and
  // {"presence_delta": {"joined": [...], "left": [...]}} (who came and went).
  function onTagged(data) {
    let value;
    try {
      value = JSON.parse(data);
    } catch (_) {
      value = null;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      const { who, text } = splitSender(data);
      addMessage(who, text);
    } else if (Array.isArray(value.presence)) {
      onPresence(value.presence);
    } else if (value.presence_delta !== null && typeof value.presence_delta === "object") {
      onPresenceDelta(value.presence_delta);
    } else if (value.notice === "gap") {
      addLine("error", "Some messages were missed while the connection was away: they are " +
                       "older than what the server keeps.");
    } else if (typeof value.text === "string") {
      const id = typeof value.id === "string" ? value.id : "";
      if (id) {
        if (session.seen.has(id)) return; // shown already
        session.seen.add(id);
        if (session.seen.size > SEEN_MAX) session.seen.delete(session.seen.values().next().value);
        session.lastId = id;
      }
      // Only a room's history carries an id before the people list comes.
      const earlier = session.replay && id !== "";
      const { who, text } = splitSender(value.text);
      addMessage(who, text, { time: sentAt(value) || (earlier ? null : new Date()), earlier });
      if (earlier) session.earlierShown = true;
    } // anything else is news from a newer server this page does not know: not shown
  }

  // The history replay is over: a divider under it, if there was any.
  function endReplay() {
    if (!session.replay) return;
    session.replay = false;
    if (session.earlierShown) addDivider();
  }

  function onClose(event) {
    const how = describeClose(event);
    if (state === "closing") {
      addLine("info", `Disconnected (${how}).`);
      session = null;
      setState("closed");
      return;
    }
    if (!session.opened) {
      // The first attempt after Connect failed: say what to check, do not retry.
      const text = `Could not connect to ${session.url} (${how}).`;
      showError(text, connectionChecks(session.url));
      addLine("error", text);
      session = null;
      setState("closed");
      return;
    }
    session.replay = false;
    if (state === "open") {
      lostStatus = `Connection lost (${how}).`;
      addLine("error", `The connection to ${session.url} was lost (${how}).`);
    } else {
      lostStatus = `Reconnect attempt ${attempt} failed (${how}).`;
      addLine("error", lostStatus);
    }
    scheduleRetry();
  }

  function scheduleRetry() {
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    retryAt = Date.now() + delay;
    addLine("info", `Reconnecting in ${Math.round(delay / 1000)} s…`);
    // The countdown lives in #status only: an alert that changed every second would be
    // read out every second.
    // The alert is short: the close in words is in the status line and the stream already.
    const checks = attempt > 0 ? connectionChecks(session.url) : [];
    const tries = attempt > 0 ? `${attempt} ${attempt === 1 ? "retry has" : "retries have"} failed so far. ` : "";
    showError(`${tries}Reconnecting automatically; press Disconnect to stop.`, checks);
    retryTimer = window.setTimeout(retryNow, delay);
    countdownTimer = window.setInterval(() => {
      ui.status.textContent = statusText();
    }, 250);
    setState("waiting");
  }

  function cancelRetry() {
    window.clearTimeout(retryTimer);
    window.clearInterval(countdownTimer);
    retryTimer = 0;
    countdownTimer = 0;
  }

  function retryNow() {
    if (state !== "waiting") return;
    cancelRetry();
    attempt += 1;
    openSocket();
  }

  function disconnect() {
    cancelRetry();
    clearError();
    if (state === "open") {
      setState("closing");
      socket.close(1000, "Disconnect pressed");
      return;
    }
    if (state === "connecting" && socket) {
      // Closing a socket that is still connecting makes the browser log an error; let it
      // finish opening and close it then, unseen.
      const ws = socket;
      socket = null;
      ws.addEventListener("open", () => ws.close(1000, "Disconnect pressed"));
    }
    if (state === "waiting" || (state === "connecting" && session.opened)) {
      addLine("info", "Stopped reconnecting.");
    } else if (state === "connecting") {
      addLine("info", "Connection attempt cancelled.");
    }
    session = null;
    setState("closed");
  }

  function sendMessage() {
    if (state !== "open" || !socket) return;
    const text = ui.message.value;
    if (!text.trim()) return;
    endReplay(); // what we say is live, whatever the server has still to tell
    socket.send(outgoingFrame(text));
    ui.message.value = "";
    ui.message.focus();
  }

  // ---- wiring -------------------------------------------------------------------------------

  function init() {
    if (!("WebSocket" in window)) {
      showError(NO_WEBSOCKET);
      for (const id of ["server", "handle", "connect", "disconnect", "message", "send"]) {
        ui[id].disabled = true;
      }
      ui.status.textContent = "Unavailable";
      return;
    }

    document.addEventListener("focusin", (event) => { lastFocused = event.target; });

    ui["connect-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      startSession();
    });
    ui.disconnect.addEventListener("click", disconnect);
    ui["send-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      sendMessage();
    });
    ui.handle.addEventListener("input", renderHandleHint);
    // The stream keeps its end in view when it gets shorter (an on-screen keyboard opening,
    // the header growing) as long as the reader had not scrolled up.
    ui.console.addEventListener("scroll", () => { stuck = nearBottom(); }, { passive: true });
    if ("ResizeObserver" in window) {
      new ResizeObserver(() => { if (stuck) toEnd(); }).observe(ui.console);
    }
    ui.server.addEventListener("input", () => {
      ui.server.removeAttribute("aria-invalid");
      if (fromFile) ui["server-hint"].classList.toggle("warning", !ui.server.value.trim());
      renderIntro();
    });
    // Escape closes the people list and puts the keyboard back on its summary.
    ui.people.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && ui.people.open) {
        ui.people.open = false;
        ui["people-count"].focus();
      }
    });
    // Back online: no need to sit out the rest of the countdown.
    window.addEventListener("online", () => { if (state === "waiting") retryNow(); });

    const params = new URLSearchParams(window.location.search);
    ui.handle.value = (params.get("handle") || "").trim();
    ui.server.value = defaultServerUrl();
    fromFile = !ui.server.value;
    render(state);
    renderIntro();

    if (fromFile) {
      ui["server-hint"].textContent =
        "This page was opened from a file, so it cannot guess the server: " +
        "type the chat server's WebSocket URL, for example ws://127.0.0.1:8080/.";
      ui["server-hint"].classList.add("warning");
      ui.server.focus();
    } else {
      ui.handle.focus();
    }
  }

  init();
})();
