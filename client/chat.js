// The chat page: one WebSocket, messages sent as text frames "handle: text".
//
// Rules kept throughout:
// - Everything shown comes from textContent / createElement; received data never meets innerHTML.
// - The page has one state at a time (see STATES); render() derives every control from it.
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
  const MAX_LINES = 1000; // oldest console lines are dropped past this
  // Our server speaks this subprotocol to us (and plain text to everyone else): text frames
  // are JSON, with --history a room's messages carry ids, so a reconnect asks for what came
  // after the last one shown (?after=ID) and nothing is lost or shown twice; and who is in
  // the room comes as a presence list, then as changes to it.
  const TAGGED = "chat.history.v1";
  const SEEN_MAX = 5000; // message ids remembered against duplicates

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
  for (const id of ["error", "status", "server", "server-hint", "handle", "handle-hint",
                    "connect", "disconnect", "console", "message", "send",
                    "connect-form", "send-form", "room", "presence"]) {
    ui[id] = document.getElementById(id);
  }

  let state = "closed";
  let socket = null;
  let session = null; // {url, handle, opened: bool} from the Connect press until closed
  let retryDelay = RETRY_FIRST_MS;
  let retryAt = 0;
  let retryTimer = 0;
  let countdownTimer = 0;
  let attempt = 0;
  let lostNote = ""; // why the connection was lost, kept while retrying
  let lastFocused = null;
  let fromFile = false; // no server to guess the URL from (file://): the page asks for it

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

  // What a WebSocket URL's path says about its room, for the console and the header.
  function roomOf(href) {
    try {
      const path = new URL(href).pathname;
      return path === "/" ? "the lobby (/)" : `room ${decodeURIComponent(path)}`;
    } catch (_) {
      return "the lobby (/)";
    }
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

  function clock(date) {
    return [date.getHours(), date.getMinutes(), date.getSeconds()]
      .map((n) => String(n).padStart(2, "0")).join(":");
  }

  // ---- output -------------------------------------------------------------------------------

  // One console line: the time, then `parts` (strings or elements), all as text nodes.
  function addLine(kind, ...parts) {
    const line = document.createElement("div");
    line.className = "line " + kind;
    const now = new Date();
    const time = document.createElement("time");
    time.dateTime = now.toISOString();
    time.textContent = clock(now);
    line.append(time, " ", ...parts);
    ui.console.append(line);
    while (ui.console.childElementCount > MAX_LINES) ui.console.firstElementChild.remove();
    ui.console.scrollTop = ui.console.scrollHeight;
    return line;
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  function addMessage(text) {
    // "handle: text" shows the handle apart; anything else (other clients) shows whole.
    const cut = text.indexOf(": ");
    const who = cut > 0 ? text.slice(0, cut) : "";
    if (who && codePoints(who) <= HANDLE_MAX) {
      const line = addLine("message", span("who", who + ":"), " ", span("text", text.slice(cut + 2)));
      if (session && who === session.handle) line.classList.add("mine");
    } else {
      addLine("message", span("text", text));
    }
  }

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
      `Is the server running? Start it with: python server.py ${listen} ${port || "8080"}`,
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
        return `Connected as ${session.handle}`;
      case "closing":
        return "Disconnecting…";
      case "waiting": {
        const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        return `Connection lost. Reconnecting in ${seconds} s…`;
      }
      default:
        return "Not connected";
    }
  }

  function render(previous) {
    const closed = state === "closed";
    const live = state === "open" || state === "connecting" || state === "waiting";
    const problem = handleProblem(ui.handle.value);

    ui.server.disabled = !closed;
    ui.handle.disabled = !closed;
    ui.connect.disabled = !closed || problem !== "";
    ui.disconnect.disabled = !live; // also stops a pending retry
    ui.send.disabled = state !== "open";
    // The message field stays usable while reconnecting, so a draft is not lost.
    ui.message.disabled = !live;

    ui.status.textContent = statusText();
    ui.status.dataset.state = state;
    document.body.dataset.state = state;

    const tooLong = problem !== "" && ui.handle.value.trim() !== "";
    ui["handle-hint"].textContent = tooLong ? problem : `Your name in the chat, 1–${HANDLE_MAX} characters.`;
    ui["handle-hint"].classList.toggle("warning", tooLong);
    if (tooLong) ui.handle.setAttribute("aria-invalid", "true");
    else ui.handle.removeAttribute("aria-invalid");

    fixFocus(previous);
  }

  // Keep keyboard users somewhere useful when the control they were on gets disabled.
  function fixFocus(previous) {
    const active = document.activeElement;
    const lost = !active || active === document.body || active.disabled;
    const wasOurs = lastFocused && lastFocused.closest && lastFocused.closest("main");
    const inConnectForm = active && ui["connect-form"].contains(active);
    if (state === "open" && previous !== "open" && (inConnectForm || (lost && wasOurs))) {
      ui.message.focus();
      return;
    }
    if (!lost || !wasOurs) return;
    if (state === "closed") (ui.connect.disabled ? ui.handle : ui.connect).focus();
    else if (!ui.disconnect.disabled) ui.disconnect.focus();
  }

  // ---- connection ---------------------------------------------------------------------------

  function startSession() {
    if (state !== "closed") return;
    clearError();
    const problem = handleProblem(ui.handle.value);
    if (problem) {
      showError(problem);
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
                lastId: "", seen: new Set() };
    retryDelay = RETRY_FIRST_MS;
    attempt = 0;
    lostNote = "";
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
      retryDelay = RETRY_FIRST_MS;
      attempt = 0;
      lostNote = "";
      clearError();
      const room = roomOf(session.url);
      addLine("info", `${again ? "Reconnected" : "Connected"} to ${session.url} as ${session.handle}, in ${room}.`);
      ui.room.textContent = `In ${room}`;
      ui.room.hidden = false;
      setState("open");
    });

    ws.addEventListener("message", (event) => {
      if (ws !== socket) return;
      if (typeof event.data !== "string") {
        addLine("info", `(a binary message of ${event.data.byteLength} bytes, not shown)`);
      } else if (ws.protocol === TAGGED) {
        onTagged(event.data);
      } else {
        addMessage(event.data);
      }
    });

    // The error event carries no detail by design; the close event that follows has the code.
    ws.addEventListener("close", (event) => {
      if (ws !== socket) return;
      socket = null;
      ui.presence.hidden = true; // out of date from now on
      here = null;
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

  // The URL of one attempt: our handle (for the room's presence list) and, on a reconnect,
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

  // Who is in the room: id -> name, in order of arrival (names repeat, ids do not).
  let here = null;

  function presenceAdd(entries) {
    for (const entry of entries) {
      if (entry && typeof entry.id === "string") here.set(entry.id, String(entry.name));
    }
    const names = Array.from(here.values());
    ui.presence.textContent = `Here (${names.length}): ${names.join(", ")}`;
    ui.presence.hidden = false;
  }

  function onTagged(data) {
    let value;
    try {
      value = JSON.parse(data);
    } catch (_) {
      addMessage(data);
      return;
    }
    if (value === null || typeof value !== "object") {
      addMessage(data);
    } else if (Array.isArray(value.presence)) {
      here = new Map(); // the room's full list: once on joining, then deltas
      presenceAdd(value.presence);
    } else if (value.presence_delta && typeof value.presence_delta === "object") {
      if (!here) return; // (the full list always comes first)
      const { joined, left } = value.presence_delta;
      if (Array.isArray(left)) for (const id of left) here.delete(String(id));
      presenceAdd(Array.isArray(joined) ? joined : []);
    } else if (value.notice === "gap") {
      addLine("error", "Some messages were missed while the connection was away: they are " +
                       "older than what the server keeps.");
    } else if (typeof value.text === "string") {
      if (typeof value.id === "string" && value.id) {
        if (session.seen.has(value.id)) return; // shown already
        session.seen.add(value.id);
        if (session.seen.size > SEEN_MAX) session.seen.delete(session.seen.values().next().value);
        session.lastId = value.id;
      }
      addMessage(value.text);
    }
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
    if (state === "open") {
      lostNote = `The connection to ${session.url} was lost (${how}).`;
      addLine("error", lostNote);
    } else {
      addLine("error", `Reconnect attempt ${attempt} failed (${how}).`);
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
    const checks = attempt > 0 ? connectionChecks(session.url) : [];
    const tries = attempt > 0 ? ` ${attempt} ${attempt === 1 ? "retry has" : "retries have"} failed so far.` : "";
    showError(`${lostNote}${tries} Reconnecting automatically; press Disconnect to stop.`, checks);
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
    socket.send(`${session.handle}: ${text}`);
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
    ui.handle.addEventListener("input", () => render(state));
    ui.server.addEventListener("input", () => {
      ui.server.removeAttribute("aria-invalid");
      if (fromFile) ui["server-hint"].classList.toggle("warning", !ui.server.value.trim());
    });
    // Back online: no need to sit out the rest of the countdown.
    window.addEventListener("online", () => { if (state === "waiting") retryNow(); });

    ui.server.value = defaultServerUrl();
    fromFile = !ui.server.value;
    render(state);

    if (fromFile) {
      ui["server-hint"].textContent =
        "This page was opened from a file, so it cannot guess the server: " +
        "type the chat server's WebSocket URL, for example ws://127.0.0.1:8080/.";
      ui["server-hint"].classList.add("warning");
      addLine("info", "Enter the chat server's WebSocket URL above, then a handle, then Connect.");
      ui.server.focus();
    }
  }

  init();
})();
