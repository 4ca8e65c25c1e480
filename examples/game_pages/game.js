// The page of examples/game.py: it shows the board the server sends and sends moves.
// The server decides everything (whose turn, who won); the page only draws.
"use strict";

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(`${scheme}//${location.host}/`);
const board = document.getElementById("board");
const status = document.getElementById("status");
const error = document.getElementById("error");
const restart = document.getElementById("restart");
const cells = [];

for (let i = 0; i < 9; i++) {
  const cell = document.createElement("button");
  cell.setAttribute("aria-label", `cell ${i}`);
  cell.dataset.cell = String(i);
  cell.addEventListener("click", () => socket.send(JSON.stringify({move: i})));
  board.appendChild(cell);
  cells.push(cell);
}
restart.addEventListener("click", () => socket.send(JSON.stringify({restart: true})));

function describe(game) {
  const seat = game.you ? `You play ${game.you}. ` : "You are watching. ";
  if (game.winner === "draw") return seat + "A draw.";
  if (game.winner) return seat + (game.winner === game.you ? "You won!" : `${game.winner} won.`);
  if (!game.players.X || !game.players.O) return seat + "Waiting for a second player...";
  return seat + (game.turn === game.you ? "Your turn." : `${game.turn} to play.`);
}

socket.addEventListener("message", (event) => {
  const message = JSON.parse(event.data);
  if (message.error) {
    error.textContent = message.error;
    return;
  }
  error.textContent = "";
  [...message.board].forEach((mark, i) => {
    cells[i].textContent = mark.trim();
    cells[i].disabled = mark !== " " || message.winner !== null || message.turn !== message.you;
  });
  restart.hidden = !(message.winner && message.you);
  status.textContent = describe(message);
});
socket.addEventListener("close", (event) => {
  status.textContent = `Disconnected (close code ${event.code}). Reload the page to play again.`;
  cells.forEach((cell) => { cell.disabled = true; });
});
