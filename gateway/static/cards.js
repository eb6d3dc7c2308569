// How this browser showed each answer (chart, follow-ups, confidence, the analyst's choices), kept in
// localStorage. The server's chat store now keeps each answer's card (message.card) and the page draws
// that; this is only the fallback for answers stored before cards were (their card is null), matched by
// chat and text.
const KEY = "insightx:cards:v1";
const MAX_CHATS = 20;
const MAX_PER_CHAT = 25;
const MAX_BYTES = 2_000_000;

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch {
    return {};
  }
}

/** Keeps how an answer of `chatId` was shown (its final_response data). */
export function keepCard(chatId, data) {
  if (!chatId || !data?.text) return;
  const all = load();
  const chat = all[chatId] || { at: 0, items: {} };
  chat.at = Date.now();
  const { chart, follow_ups, confidence, answer_type, clarifications, cached } = data;
  delete chat.items[data.text];
  chat.items[data.text] = { chart, follow_ups, confidence, answer_type, clarifications, cached };
  const texts = Object.keys(chat.items);
  for (const text of texts.slice(0, Math.max(0, texts.length - MAX_PER_CHAT))) delete chat.items[text];
  all[chatId] = chat;
  const chats = Object.keys(all).sort((a, b) => all[b].at - all[a].at);
  for (const id of chats.slice(MAX_CHATS)) delete all[id];
  let text = JSON.stringify(all);
  while (text.length > MAX_BYTES && Object.keys(all).length > 1) { // the oldest chats go first
    const oldest = Object.keys(all).sort((a, b) => all[a].at - all[b].at)[0];
    delete all[oldest];
    text = JSON.stringify(all);
  }
  try {
    localStorage.setItem(KEY, text);
  } catch { /* storage full or off: the card is restored without its chart */ }
}

/** How the answer `text` of `chatId` was shown here, or null. */
export function cardFor(chatId, text) {
  return load()[chatId]?.items?.[text] || null;
}
