// The frontend's SSE reader: fetch, split the body on "\n", JSON.parse every `data: ` line.
// One module for the page and for Node (tests/gateway/reader.test.mjs): no DOM, only fetch and streams.

/**
 * Yields each event of an SSE response body, in order, however the bytes were chunked.
 * Only the new text of each chunk is scanned for "\n", so a 2 MB event arriving in small chunks stays linear.
 */
export async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = [];
  function* lines(text) {
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      pending.push(text.slice(start, nl));
      const line = pending.join("");
      pending = [];
      start = nl + 1;
      if (line.startsWith("data: ")) yield JSON.parse(line.slice(6));
    }
    if (start < text.length) pending.push(text.slice(start));
  }
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* lines(decoder.decode(value, { stream: true }));
    }
    yield* lines(decoder.decode() + "\n");
  } finally {
    reader.releaseLock();
  }
}

/** An HTTP error answered as {"error": {"code", "message"}}. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function apiError(response) {
  let code = `HTTP_${response.status}`;
  let message = response.statusText || "The request failed.";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, code, message);
}

// Which event types end an answer: the gateway's contract (GET /events.json, from common/chat_events.py),
// read once per gateway. The list here is only for a gateway too old to serve it.
const KNOWN_TERMINAL = ["final_response", "error"];
const terminalByBase = new Map();

export function terminalTypes(baseUrl = "") {
  if (!terminalByBase.has(baseUrl)) {
    terminalByBase.set(baseUrl, fetch(`${baseUrl}/events.json`)
      .then((r) => (r.ok ? r.json() : null))
      .then((contract) => new Set(Array.isArray(contract?.terminal) ? contract.terminal : KNOWN_TERMINAL))
      .catch(() => new Set(KNOWN_TERMINAL)));
  }
  return terminalByBase.get(baseUrl);
}

/**
 * POSTs one question and calls onEvent for every event until `final_response` or `error`.
 * Without a chat_id the server makes the chat and answers its id in X-Chat-Id: onChat gets it, and a
 * connection that drops before the end is resumed on that chat with Last-Event-ID (the last seq seen).
 * `headers` adds request headers (a bearer token outside the browser, where the login cookie is absent).
 */
export async function streamChat(baseUrl, body, { onEvent, onChat, signal, headers: extra = {}, retries = 3, retryMs = 1000 } = {}) {
  const TERMINAL = await terminalTypes(baseUrl);
  let lastSeq = 0;
  for (let attempt = 0; ; attempt++) {
    const headers = { ...extra, "content-type": "application/json", accept: "text/event-stream" };
    if (lastSeq > 0) headers["last-event-id"] = String(lastSeq);
    let response;
    try {
      response = await fetch(`${baseUrl}/api/chat/stream`, {
        method: "POST", headers, body: JSON.stringify(body), signal,
      });
    } catch (err) {
      if (signal?.aborted || attempt >= retries) throw err;
      await new Promise((r) => setTimeout(r, retryMs));
      continue;
    }
    if (!response.ok) throw await apiError(response);
    const chatId = response.headers.get("x-chat-id");
    if (chatId && body.chat_id !== chatId) {
      body = { ...body, chat_id: chatId };
      onChat?.(chatId);
    }
    if (response.status === 204) {
      // resumed past the stream's end: the server has nothing more, so reconnecting again would not help
      throw new ApiError(204, "STREAM_ENDED", "The answer stream ended before the answer.");
    }
    try {
      for await (const event of sseEvents(response)) {
        if (typeof event.seq === "number") lastSeq = Math.max(lastSeq, event.seq);
        onEvent(event);
        if (TERMINAL.has(event.type)) return event;
      }
    } catch (err) {
      if (signal?.aborted || attempt >= retries || err instanceof SyntaxError) throw err;
    }
    if (attempt >= retries) throw new ApiError(0, "STREAM_ENDED", "The answer stream ended before the answer.");
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
