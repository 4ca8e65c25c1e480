// The wire page: the server's --trace, live, from the WebSocket at /wire (websocket/observe/wire.py).
// - Each message is JSON {"conn": N, "text": "..."}: one block of the trace, cut by the
//   server (--trace-bytes). It is shown with textContent, never as HTML. Connection 0 is
//   the trace's own note (how many blocks the stream's rate left out), shown whatever
//   the filter.
// - At most MAX_BLOCKS blocks are kept: the oldest go first, so a long session stays small.
// - If the stream drops, it reconnects after 1 s, 2 s, 4 s ... up to 30 s.
"use strict";

(() => {
  const MAX_BLOCKS = 2000;
  const wire = document.getElementById("wire");
  const status = document.getElementById("status");
  const filter = document.getElementById("filter");
  const pause = document.getElementById("pause");
  const clear = document.getElementById("clear");
  const count = document.getElementById("count");
  const seen = new Set();
  let delay = 1000;
  let paused = [];

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function visible(block) {
    return !filter.value || block.dataset.conn === filter.value || block.dataset.conn === "0";
  }

  function updateCount() {
    const n = wire.childElementCount;
    count.textContent = n === 1 ? "1 block" : `${n} blocks`;
  }

  function addConnection(conn) {
    if (seen.has(conn)) return;
    seen.add(conn);
    const option = document.createElement("option");
    option.value = String(conn);
    option.textContent = `#${conn}`;
    filter.appendChild(option);
  }

  function show(item) {
    const block = document.createElement("pre");
    block.className = "block";
    block.dataset.conn = String(item.conn);
    const first = item.text.split("\n", 1)[0];
    if (first.includes("client->server")) block.classList.add("in");
    else if (first.includes("server->client")) block.classList.add("out");
    block.textContent = item.text;
    block.hidden = !visible(block);
    const atEnd = wire.scrollTop + wire.clientHeight >= wire.scrollHeight - 8;
    wire.appendChild(block);
    while (wire.childElementCount > MAX_BLOCKS) wire.firstElementChild.remove();
    if (atEnd) wire.scrollTop = wire.scrollHeight;
    updateCount();
  }

  function receive(data) {
    let item;
    try {
      item = JSON.parse(data);
    } catch (error) {
      return; // not ours: nothing to show
    }
    if (typeof item !== "object" || item === null || typeof item.text !== "string") return;
    if (item.conn !== 0) addConnection(item.conn);
    if (pause.checked) {
      paused.push(item);
      if (paused.length > MAX_BLOCKS) paused.shift();
      return;
    }
    show(item);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/wire`;
    setStatus(`Connecting to ${url}`, "connecting");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      setStatus(`Cannot open ${url}: ${error.message}`, "closed");
      return;
    }
    ws.onopen = () => {
      delay = 1000;
      setStatus(`Watching ${url}`, "open");
    };
    ws.onmessage = (event) => receive(event.data);
    ws.onclose = (event) => {
      const seconds = Math.round(delay / 1000);
      setStatus(`Disconnected (code ${event.code}); again in ${seconds} s`, "closed");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }

  filter.addEventListener("change", () => {
    for (const block of wire.children) block.hidden = !visible(block);
  });
  pause.addEventListener("change", () => {
    if (!pause.checked) {
      const waiting = paused;
      paused = [];
      for (const item of waiting) show(item);
    }
  });
  clear.addEventListener("click", () => {
    wire.replaceChildren();
    paused = [];
    updateCount();
  });

  if (!("WebSocket" in window)) {
    setStatus("This browser has no WebSocket", "closed");
    return;
  }
  connect();
})();
