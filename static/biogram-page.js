/**
 * biogram-page.js: the built-in messages page (templates/messaging/index.html).
 *
 * The socket (connect, reconnect, sync, outbox, token refresh) is
 * biogram-client.js; this file only draws what it reports. REST calls (chat
 * list, history pages, user search, new chats, a replied-to message not on
 * screen) go with the Django session and its CSRF token. Every piece of user
 * text reaches the DOM as text: nodes are built with el() below, never from
 * HTML strings.
 *
 * At 700 px wide or less one pane shows at a time: the chat list, or the
 * open chat with a Back button (the URL's #chat-N says which, so the
 * browser's Back works too). Messages come with day separators, grouped by
 * sender (the time on the last of a group), an unread divider when a chat
 * opens with unread messages, and a jump-to-latest button counting what
 * arrived below. The tab title counts unread messages; a desktop
 * notification (after "Turn on notifications") announces a message unless
 * its chat is open in a visible tab or muted in the chat's menu, which also
 * renames, adds members, lists them and leaves. Presence shows "unknown"
 * while the page itself is not connected.
 *
 * Each bubble has a menu (⋯): reactions, reply, and on one's own messages
 * edit and delete. The composer then edits or replies (a bar above it says
 * which; Escape or Cancel ends it). Under each of one's own messages a tick
 * says Sent (✓), Delivered (✓✓) or Seen (blue ✓✓), for every other member;
 * under the latest, "Delivered to N" / "Seen by N" in a group.
 */

import { BiogramSocket, sessionTokenSource } from "./biogram-client.js";
import { enablePush } from "./biogram-push.js";

const PAGE_SIZE = 40;
const QUICK_EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🎉"];
const SNIPPET = 80;
const GROUP_GAP_MS = 5 * 60 * 1000; // consecutive messages of a sender closer than this are grouped
const SEARCH_MIN = 2;
const TITLE = "Messages · Biogram";
const DAY_MS = 24 * 60 * 60 * 1000;
const boot = JSON.parse(document.getElementById("biogram-boot").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const me = boot.userId;
const $ = (id) => document.getElementById(id);

const client = new BiogramSocket({
  getToken: sessionTokenSource({ csrfToken }),
  storage: window.localStorage,
  storageKey: `biogram-outbox:${me}`,
});
window.biogram = { client }; // handy in the browser console

const chats = new Map(); // chatId -> chat object of the REST API, kept current
const online = new Set(); // user ids
const typists = new Map(); // chatId -> Map(userId -> timer)
let openChatId = null;
let openSerial = 0; // discards answers for a chat that is no longer open
const history = { oldestSeq: null, hasMore: false, loading: false };
const shown = new Map(); // messageId -> the message shown in the open chat (its newest copy)
const originals = new Map(); // messageId -> a replied-to message fetched because it is not shown
const composer = { mode: null, message: null }; // mode: "edit" | "reply" | null
let connected = false; // presence is only known while the page's own socket is up
let unreadDivider = null; // {chatId, afterSeq}: "New messages" goes before the first later one
let newBelow = 0; // messages that arrived below while the reader was scrolled up

// ---------------------------------------------------------------- helpers

/** A DOM element; strings become text nodes, so user text is never parsed as HTML. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** A failed REST call: `status`, and the server's `code` and `message` when it gave them. */
class ApiError extends Error {
  constructor(method, path, status, body) {
    super((body && body.message) || `${method} ${path} answered ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) sessionEnded();
  if (!response.ok) {
    const answer = await response.json().catch(() => null);
    throw new ApiError(method, path, response.status, answer);
  }
  return response.status === 204 ? null : response.json();
}

function usernameOf(userId) {
  for (const chat of chats.values()) {
    const member = chat.members.find((m) => m.id === userId);
    if (member) return member.username;
  }
  return `user ${userId}`;
}

function others(chat) {
  return chat.members.filter((m) => m.id !== me);
}

function chatTitle(chat) {
  if (chat.title) return chat.title;
  const names = others(chat).map((m) => m.username);
  return names.length ? names.join(", ") : "Only you";
}

/** "online", "offline", or "unknown" while the page is not connected (it would not hear). */
function presenceOf(userIds) {
  if (!connected) return "unknown";
  return userIds.some((id) => online.has(id)) ? "online" : "offline";
}

function chatPresence(chat) {
  return presenceOf(others(chat).map((m) => m.id));
}

function presenceDot(state) {
  return el("span", { class: `presence ${state}`, title: state, "aria-hidden": "true" });
}

function activity(chat) {
  return Date.parse((chat.lastMessage && chat.lastMessage.createdAt) || chat.createdAt);
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  });
}

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** How many calendar days before today `iso` is (0 today, 1 yesterday). */
function daysAgo(iso) {
  return Math.round((startOfDay(new Date()) - startOfDay(new Date(iso))) / DAY_MS);
}

/** "Today", "Yesterday", a weekday within the week, else a date (the year if not this one). */
function dayLabel(iso) {
  const days = daysAgo(iso);
  const date = new Date(iso);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days > 1 && days < 7) return date.toLocaleDateString([], { weekday: "long" });
  const sameYear = date.getFullYear() === new Date().getFullYear();
  return date.toLocaleDateString([], {
    day: "numeric",
    month: "short",
    year: sameYear ? undefined : "numeric",
  });
}

/** The chat list's time: 16:35 today, else "Yesterday", a short weekday or a short date. */
function listTime(iso) {
  const days = daysAgo(iso);
  if (days === 0) return timeOf(iso);
  if (days === 1) return "Yesterday";
  const date = new Date(iso);
  if (days > 1 && days < 7) return date.toLocaleDateString([], { weekday: "short" });
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

function pageVisible() {
  return document.visibilityState === "visible";
}

function upsertChat(chat) {
  const known = chats.get(chat.id);
  if (known && known.lastMessage && chat.lastMessage) {
    if (Number(known.lastMessage.seq) > Number(chat.lastMessage.seq)) {
      chat.lastMessage = known.lastMessage;
    }
  }
  chats.set(chat.id, chat);
  const seq = chat.lastMessage ? chat.lastMessage.seq : 0;
  if (chat.id !== openChatId) client.track(chat.id, seq, chat.rev);
  const self = chat.members.find((m) => m.id === me);
  if (chat.lastMessage && (!self || Number(self.lastDeliveredSeq || 0) < Number(seq))) {
    client.delivered(chat.id, seq); // shown in the chat list, and not yet reported
  }
  return chat;
}

async function fetchChat(chatId) {
  try {
    upsertChat(await api(`/api/chats/${chatId}/`));
    renderChatList();
  } catch (error) {
    console.warn("biogram: chat", chatId, error);
  }
}

// ---------------------------------------------------------------- connection indicator

let countdown = null;

function renderConnection({ state, nextAttemptAt, reason }) {
  const box = $("connection");
  const label = $("connection-label");
  clearInterval(countdown);
  box.dataset.state = state;
  if (connected !== (state === "connected")) {
    connected = state === "connected";
    renderChatList(); // presence dots: known again, or unknown
  }
  $("retry-now").hidden = state !== "reconnecting";
  if (state === "connected") {
    box.dataset.tone = "green";
    label.textContent = "Connected";
  } else if (state === "offline") {
    box.dataset.tone = "red";
    label.textContent = reason === "unauthorized" ? "Offline: please log in again" : "Offline";
  } else if (state === "connecting") {
    box.dataset.tone = "amber";
    label.textContent = client.attempt ? "Reconnecting…" : "Connecting…";
  } else {
    box.dataset.tone = "amber";
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((nextAttemptAt - Date.now()) / 1000));
      label.textContent = `Reconnecting in ${seconds} s…`;
    };
    tick();
    countdown = setInterval(tick, 250);
  }
}

function sessionEnded({ reason } = {}) {
  const why = {
    logged_out: "You were logged out (here or in another tab).",
    banned: "This account was banned.",
  };
  $("session-ended-text").textContent = why[reason] || "Your session has ended.";
  $("session-ended").hidden = false;
}

// ---------------------------------------------------------------- chat list

function previewOf(chat) {
  const last = chat.lastMessage;
  if (!last) return "No messages yet";
  const text = last.deleted ? "message deleted" : last.text;
  if (last.senderId === me) return `You: ${text}`;
  return chat.isDirect ? text : `${usernameOf(last.senderId)}: ${text}`;
}

function unreadTotal() {
  let total = 0;
  for (const chat of chats.values()) total += chat.unreadCount || 0;
  return total;
}

function renderChatList() {
  const list = $("chat-list");
  const sorted = [...chats.values()].sort((a, b) => activity(b) - activity(a) || b.id - a.id);
  list.replaceChildren(
    ...sorted.map((chat) => {
      const last = chat.lastMessage;
      const presence = chatPresence(chat);
      const open = chat.id === openChatId;
      return el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: open ? "chat-item open" : "chat-item",
            dataset: { chatId: chat.id },
            "aria-current": open ? "true" : null,
            onclick: () => goToChat(chat.id),
          },
          presenceDot(presence),
          chat.isDirect ? el("span", { class: "sr-only" }, `${presence}: `) : null,
          el(
            "span",
            { class: "chat-text" },
            el(
              "span",
              { class: "chat-top" },
              el("span", { class: "chat-name" }, chatTitle(chat)),
              chat.notificationsMuted
                ? el("span", { class: "muted-icon", title: "Notifications muted" }, "🔕", el("span", { class: "sr-only" }, "notifications muted"))
                : null,
              el(
                "time",
                { class: "chat-time", datetime: last ? last.createdAt : chat.createdAt },
                listTime(last ? last.createdAt : chat.createdAt),
              ),
            ),
            el(
              "span",
              { class: "chat-bottom" },
              el("span", { class: "chat-preview" }, previewOf(chat)),
              chat.unreadCount
                ? el(
                    "span",
                    { class: "unread" },
                    String(chat.unreadCount),
                    el("span", { class: "sr-only" }, " unread"),
                  )
                : null,
            ),
          ),
        ),
      );
    }),
  );
  $("no-chats").hidden = chats.size > 0;
  const total = unreadTotal();
  document.title = total ? `(${total}) ${TITLE}` : TITLE;
  if (openChatId && chats.has(openChatId)) renderChatHeader(chats.get(openChatId));
}

// ---------------------------------------------------------------- chat box

function renderChatHeader(chat) {
  $("chat-title").textContent = chatTitle(chat);
  const presence = chatPresence(chat);
  if (chat.isDirect) {
    $("chat-members").textContent = presence;
  } else {
    const here = connected ? chat.members.filter((m) => m.id !== me && online.has(m.id)).length : 0;
    const count = `${chat.members.length} ${chat.members.length === 1 ? "member" : "members"}`;
    $("chat-members").textContent = here ? `${count}, ${here} online` : count;
  }
  $("chat-presence").className = `presence ${presence}`;
  $("chat-members").dataset.presence = chat.isDirect ? presence : "";
  $("menu-mute").textContent = chat.notificationsMuted
    ? "Unmute notifications"
    : "Mute notifications";
  $("menu-rename").hidden = chat.isDirect;
  $("menu-add").hidden = chat.isDirect;
  if (!$("members-dialog").hidden && $("members-dialog").open) renderMembers(chat);
}

function snippet(text) {
  return text.length > SNIPPET ? `${text.slice(0, SNIPPET - 1)}…` : text;
}

function messageNode(message) {
  const mine = message.senderId === me;
  const chat = chats.get(message.chatId);
  const node = el(
    "li",
    {
      class: `message ${mine ? "mine" : "theirs"}${message.deleted ? " deleted" : ""}`,
      dataset: {
        id: message.id,
        seq: message.seq,
        rev: message.rev || "0",
        clientId: message.clientMessageId || "",
        replyTo: message.replyTo ? message.replyTo.id : "",
        sender: message.senderId || "",
        at: message.createdAt,
      },
    },
    !mine && chat && !chat.isDirect
      ? el("span", { class: "sender" }, usernameOf(message.senderId))
      : null,
    message.replyTo ? quoteNode(message) : null,
    el("span", { class: "text" }, message.deleted ? "Message deleted" : message.text),
    reactionsNode(message),
    el(
      "span",
      { class: "meta" },
      message.editedAt && !message.deleted ? el("span", { class: "edited" }, "edited") : null,
      el("time", { datetime: message.createdAt }, timeOf(message.createdAt)),
      mine && !message.deleted ? el("span", { class: "tick", dataset: { state: "sent" } }) : null,
    ),
    message.deleted
      ? null
      : el(
          "button",
          {
            type: "button",
            class: "menu-button",
            "aria-label": "Message actions",
            "aria-haspopup": "true",
            onclick: (event) => {
              event.stopPropagation();
              openMenu(node, message);
            },
          },
          "⋯",
        ),
  );
  return node;
}

/** The quoted original of a reply: who and what, or that it was deleted; click to go there. */
function quoteNode(message) {
  const id = message.replyTo.id;
  const original = shown.get(id) || originals.get(id);
  let who = "";
  let what = "…";
  if (original) {
    who = original.senderId === me ? "You" : usernameOf(original.senderId);
    what = original.deleted ? "Original deleted" : snippet(original.text);
  } else {
    fetchOriginal(message.chatId, id);
  }
  return el(
    "button",
    {
      type: "button",
      class: original && original.deleted ? "quote gone" : "quote",
      dataset: { quotes: id },
      onclick: () => scrollToMessage(id),
    },
    who ? el("span", { class: "quote-sender" }, who) : null,
    el("span", { class: "quote-text" }, what),
  );
}

async function fetchOriginal(chatId, messageId) {
  if (originals.has(messageId)) return;
  originals.set(messageId, null); // asked once
  try {
    const message = client.freshest(await api(`/api/chats/${chatId}/messages/${messageId}/`));
    originals.set(messageId, message);
    refreshQuotes(messageId);
  } catch (error) {
    console.warn("biogram: message", messageId, error);
  }
}

function refreshQuotes(messageId) {
  for (const node of $("message-list").querySelectorAll(
    `li[data-reply-to="${CSS.escape(messageId)}"]`,
  )) {
    const message = shown.get(node.dataset.id);
    if (message) node.querySelector(".quote").replaceWith(quoteNode(message));
  }
}

/** Go to a message of the open chat, loading older pages until it is there. */
async function scrollToMessage(messageId) {
  const find = () => $("message-list").querySelector(`li[data-id="${CSS.escape(messageId)}"]`);
  for (let pages = 0; !find() && history.hasMore && pages < 20; pages += 1) await loadOlder();
  const node = find();
  if (!node) return;
  node.scrollIntoView({ block: "center" });
  node.classList.add("flash");
  setTimeout(() => node.classList.remove("flash"), 1500);
}

function reactionsNode(message) {
  const reactions = message.deleted ? [] : message.reactions || [];
  if (!reactions.length) return null;
  return el(
    "span",
    { class: "reactions" },
    reactions.map(({ emoji, userIds }) => {
      const mine = userIds.includes(me);
      const names = userIds.map((id) => (id === me ? "you" : usernameOf(id))).join(", ");
      return el(
        "button",
        {
          type: "button",
          class: mine ? "reaction mine" : "reaction",
          title: names,
          "aria-pressed": mine ? "true" : "false",
          dataset: { emoji },
          onclick: () => react(message, emoji, !mine),
        },
        `${emoji} ${userIds.length}`,
      );
    }),
  );
}

function react(message, emoji, on) {
  if (!client.react(message.chatId, message.id, emoji, on)) notice("Offline: try again once connected.");
}

// ---------------------------------------------------------------- a bubble's menu

let menu = null; // {node, element}

function closeMenu() {
  if (menu) menu.element.remove();
  menu = null;
}

function openMenu(node, message) {
  const again = menu && menu.node === node;
  closeMenu();
  if (again) return;
  const current = shown.get(message.id) || message;
  const mine = current.senderId === me;
  const myEmoji = new Set(
    (current.reactions || []).filter((r) => r.userIds.includes(me)).map((r) => r.emoji),
  );
  const item = (label, action, extra = {}) =>
    el(
      "button",
      {
        type: "button",
        role: "menuitem",
        ...extra,
        onclick: (event) => {
          event.stopPropagation();
          action(event);
        },
      },
      label,
    );
  const element = el(
    "div",
    { class: "message-menu", role: "menu" },
    el(
      "div",
      { class: "emoji-picker", role: "group", "aria-label": "React" },
      QUICK_EMOJI.map((emoji) =>
        item(emoji, () => {
          closeMenu();
          react(current, emoji, !myEmoji.has(emoji));
        }, { class: myEmoji.has(emoji) ? "pick mine" : "pick", dataset: { emoji } }),
      ),
    ),
    item("Reply", () => {
      closeMenu();
      startComposer("reply", current);
    }, { class: "reply" }),
    mine
      ? item("Edit", () => {
          closeMenu();
          startComposer("edit", current);
        }, { class: "edit" })
      : null,
    mine
      ? item("Delete", (event) => {
          const button = event.currentTarget;
          if (!button.classList.contains("confirm")) {
            button.classList.add("confirm");
            button.textContent = "Delete for everyone?";
            return;
          }
          closeMenu();
          if (!client.deleteMessage(current.chatId, current.id)) {
            notice("Offline: try again once connected.");
          }
        }, { class: "delete" })
      : null,
  );
  node.append(element);
  menu = { node, element };
}

document.addEventListener("click", (event) => {
  if (menu && !menu.element.contains(event.target)) closeMenu();
});

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => {
    box.hidden = true;
  }, 4000);
}

// ---------------------------------------------------------------- composer: edit and reply

function startComposer(mode, message) {
  composer.mode = mode;
  composer.message = message;
  const who = message.senderId === me ? "yourself" : usernameOf(message.senderId);
  $("composer-context-text").textContent =
    mode === "edit" ? "Editing your message" : `Replying to ${who}: ${snippet(message.text)}`;
  $("composer-context").hidden = false;
  const box = $("composer-text");
  if (mode === "edit") box.value = message.text;
  box.focus();
}

function endComposer() {
  if (composer.mode === "edit") $("composer-text").value = "";
  composer.mode = null;
  composer.message = null;
  $("composer-context").hidden = true;
}

/** Insert a message in seq order; a message already shown is replaced by a newer copy only. */
function showMessage(message) {
  const list = $("message-list");
  message = client.freshest(message);
  const existing = list.querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
  if (existing) {
    if (Number(message.rev || 0) > Number(existing.dataset.rev)) replaceMessage(message);
    return;
  }
  shown.set(message.id, message);
  const node = messageNode(message);
  const seq = Number(message.seq);
  const after = [...list.children].find((li) => Number(li.dataset.seq) > seq);
  list.insertBefore(node, after || null);
  refreshQuotes(message.id);
  decorate();
}

/** Day separators, grouping by sender, and the unread divider, redrawn around the bubbles. */
function decorate() {
  const list = $("message-list");
  list.querySelectorAll("li.day, li.unread-divider").forEach((node) => node.remove());
  const bubbles = [...list.querySelectorAll("li.message")];
  let previous = null;
  // The divider goes before the first unread message only once it is loaded (with all before it).
  let dividerDone =
    !unreadDivider ||
    unreadDivider.chatId !== openChatId ||
    !bubbles.length ||
    Number(bubbles[0].dataset.seq) > unreadDivider.afterSeq + 1;
  for (const node of bubbles) {
    const day = startOfDay(new Date(node.dataset.at));
    const newDay = !previous || startOfDay(new Date(previous.dataset.at)) !== day;
    if (newDay) {
      list.insertBefore(
        el("li", { class: "day" }, el("time", { datetime: node.dataset.at }, dayLabel(node.dataset.at))),
        node,
      );
    }
    let divider = false;
    if (!dividerDone && node.classList.contains("theirs")) {
      if (Number(node.dataset.seq) > unreadDivider.afterSeq) {
        list.insertBefore(el("li", { class: "unread-divider" }, "New messages"), node);
        dividerDone = true;
        divider = true;
      }
    }
    const follows =
      previous &&
      !newDay &&
      !divider &&
      !previous.classList.contains("deleted") &&
      !node.classList.contains("deleted") &&
      previous.dataset.sender === node.dataset.sender &&
      Date.parse(node.dataset.at) - Date.parse(previous.dataset.at) < GROUP_GAP_MS;
    node.classList.toggle("follows", Boolean(follows));
    if (previous) previous.classList.toggle("continues", Boolean(follows));
    previous = node;
  }
  if (previous) previous.classList.remove("continues");
}

/** Draw a newer copy of a message already shown (edited, deleted, restored, reactions). */
function replaceMessage(message) {
  const node = $("message-list").querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
  if (!node || Number(message.rev || 0) <= Number(node.dataset.rev)) return;
  shown.set(message.id, message);
  if (menu && menu.node === node) closeMenu();
  const fresh = messageNode(message);
  fresh.className = node.className.replace(/\bdeleted\b/, "").trim();
  fresh.classList.toggle("deleted", Boolean(message.deleted));
  node.replaceWith(fresh);
  if (message.deleted) decorate();
  if (composer.message && composer.message.id === message.id) {
    if (message.deleted) endComposer();
    else composer.message = message;
  }
  refreshQuotes(message.id);
  renderReceipt();
}

function showPending(item) {
  $("pending-list").append(
    el(
      "li",
      { class: "message mine pending", dataset: { clientId: item.clientMessageId } },
      el("span", { class: "text" }, item.text),
      el("span", { class: "meta" }, el("span", { class: "status" }, "Sending…")),
    ),
  );
}

function pendingNode(clientMessageId) {
  return $("pending-list").querySelector(`li[data-client-id="${CSS.escape(clientMessageId)}"]`);
}

/** Each of my messages' tick (Sent, Delivered, Seen: by every other member), and under the
 * latest one "Sent", "Delivered" / "Delivered to N", "Seen" / "Seen by N". */
function renderReceipt() {
  document.querySelectorAll("#message-list .receipt").forEach((node) => node.remove());
  const chat = chats.get(openChatId);
  const mine = [...$("message-list").querySelectorAll("li.mine")];
  if (!chat || !mine.length) return;
  const members = others(chat);
  const readSeq = (m) => Number(m.lastReadSeq || 0);
  const deliveredSeq = (m) => Math.max(Number(m.lastDeliveredSeq || 0), readSeq(m));
  for (const node of mine) {
    const tick = node.querySelector(".tick");
    if (!tick) continue;
    const seq = Number(node.dataset.seq);
    let state = "sent";
    if (members.length && members.every((m) => readSeq(m) >= seq)) state = "seen";
    else if (members.length && members.every((m) => deliveredSeq(m) >= seq)) state = "delivered";
    tick.dataset.state = state;
    tick.textContent = state === "sent" ? "✓" : "✓✓";
    tick.title = state[0].toUpperCase() + state.slice(1);
  }
  const latest = mine[mine.length - 1];
  const seq = Number(latest.dataset.seq);
  const readers = members.filter((m) => readSeq(m) >= seq).length;
  const reached = members.filter((m) => deliveredSeq(m) >= seq).length;
  let text = "Sent";
  if (readers) text = chat.isDirect ? "Seen" : `Seen by ${readers}`;
  else if (reached) text = chat.isDirect ? "Delivered" : `Delivered to ${reached}`;
  latest.querySelector(".meta").append(el("span", { class: "receipt" }, text));
}

function renderTyping() {
  const names = [...(typists.get(openChatId) || new Map()).keys()].map(usernameOf);
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length > 1) text = `${names.join(" and ")} are typing…`;
  $("typing").textContent = text;
}

function setTyping(chatId, userId, isTyping, expiresInMs = 3000) {
  if (!typists.has(chatId)) typists.set(chatId, new Map());
  const inChat = typists.get(chatId);
  clearTimeout(inChat.get(userId));
  if (isTyping) {
    // The server says when typing stops; this only covers a lost `false`.
    inChat.set(
      userId,
      setTimeout(() => setTyping(chatId, userId, false), expiresInMs + 1000),
    );
  } else {
    inChat.delete(userId);
  }
  if (chatId === openChatId) renderTyping();
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
  newBelow = 0;
  renderJump();
}

/** The jump-to-latest button: shown while scrolled up, with how many arrived below. */
function renderJump() {
  const button = $("jump");
  const show = Boolean(openChatId) && !nearBottom();
  if (!show) newBelow = 0;
  button.hidden = !show;
  $("jump-label").textContent = newBelow
    ? `${newBelow} new ${newBelow === 1 ? "message" : "messages"}`
    : "Latest";
  button.setAttribute(
    "aria-label",
    newBelow ? `Jump to the latest: ${newBelow} new below` : "Jump to the latest message",
  );
}

/** Mark the open chat read up to the newest message of others, when the reader can see it. */
function markRead() {
  const chat = chats.get(openChatId);
  if (!chat || !pageVisible() || !nearBottom()) return;
  const theirs = [...$("message-list").querySelectorAll("li.theirs")];
  const latest = theirs[theirs.length - 1];
  if (!latest || Number(latest.dataset.seq) <= Number(chat.lastReadSeq)) return;
  chat.lastReadSeq = latest.dataset.seq;
  client.read(chat.id, latest.dataset.id);
  if (chat.lastMessage && Number(chat.lastReadSeq) >= Number(chat.lastMessage.seq)) {
    chat.unreadCount = 0;
    renderChatList();
  }
}

/** Open a chat through the URL (#chat-N), so the browser's Back returns to the list. */
function goToChat(chatId) {
  if (window.location.hash === `#chat-${chatId}`) openChat(chatId);
  else window.location.hash = `chat-${chatId}`;
}

function closeChat() {
  openChatId = null;
  openSerial += 1;
  closeMenu();
  closeChatMenu();
  $("chat-box").hidden = true;
  $("no-chat").hidden = false;
  $("layout").dataset.pane = "list";
  renderChatList();
}

function followHash() {
  const wanted = window.location.hash.replace(/^#chat-/, "");
  if (wanted && chats.has(wanted)) {
    if (wanted !== openChatId) openChat(wanted);
  } else if (openChatId) {
    closeChat();
  }
}

async function openChat(chatId) {
  const chat = chats.get(chatId);
  if (!chat) return;
  const serial = ++openSerial;
  openChatId = chatId;
  history.oldestSeq = null;
  history.hasMore = false;
  history.loading = true;
  unreadDivider = chat.unreadCount ? { chatId, afterSeq: Number(chat.lastReadSeq) } : null;
  newBelow = 0;
  $("layout").dataset.pane = "chat";
  $("no-chat").hidden = true;
  $("chat-box").hidden = false;
  closeChatMenu();
  $("message-list").replaceChildren();
  $("pending-list").replaceChildren();
  shown.clear();
  closeMenu();
  endComposer();
  client.pending(chatId).forEach(showPending);
  $("history-status").textContent = "Loading…";
  renderChatList();
  renderTyping();
  renderJump();
  if (window.matchMedia("(min-width: 701px)").matches) $("composer-text").focus();
  try {
    const page = await api(`/api/chats/${chatId}/messages/?limit=${PAGE_SIZE}`);
    if (serial !== openSerial) return;
    page.results.forEach(showMessage);
    history.hasMore = page.hasMore;
    history.oldestSeq = page.results.length ? page.results[0].seq : null;
    const last = page.results[page.results.length - 1];
    if (last) {
      client.track(chatId, last.seq);
      client.delivered(chatId, last.seq);
    }
    $("history-status").textContent = history.hasMore ? "" : "This is the start of the chat.";
  } catch (error) {
    if (serial === openSerial) $("history-status").textContent = "Could not load the history.";
    return;
  } finally {
    if (serial === openSerial) history.loading = false;
  }
  renderReceipt();
  const divider = $("message-list").querySelector("li.unread-divider");
  if (divider) $("messages").scrollTop = divider.offsetTop - 8;
  else scrollToBottom();
  renderJump();
  markRead();
  fillScreen();
}

/** Older pages, through the REST history, when the reader scrolls to the top. */
async function loadOlder() {
  if (history.loading || !history.hasMore || !history.oldestSeq) return;
  const serial = openSerial;
  const chatId = openChatId;
  history.loading = true;
  $("history-status").textContent = "Loading earlier messages…";
  try {
    const page = await api(
      `/api/chats/${chatId}/messages/?before=${history.oldestSeq}&limit=${PAGE_SIZE}`,
    );
    if (serial !== openSerial) return;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    page.results.forEach(showMessage);
    box.scrollTop = box.scrollHeight - fromBottom; // keep the reader's place
    renderJump();
    history.hasMore = page.hasMore;
    if (page.results.length) history.oldestSeq = page.results[0].seq;
    $("history-status").textContent = history.hasMore ? "" : "This is the start of the chat.";
  } catch {
    if (serial === openSerial) $("history-status").textContent = "Could not load earlier messages.";
  } finally {
    if (serial === openSerial) history.loading = false;
  }
  fillScreen();
}

/** Keep loading older pages while they do not fill the box (nothing to scroll yet). */
function fillScreen() {
  const box = $("messages");
  if (history.hasMore && box.scrollHeight <= box.clientHeight) loadOlder();
}

// ---------------------------------------------------------------- socket events

client.on("state", renderConnection);

client.on("unauthorized", sessionEnded);

client.on("ready", (data) => {
  online.clear();
  data.online.forEach((id) => online.add(id));
  const member = new Set(data.chats);
  for (const chatId of [...chats.keys()]) {
    if (!member.has(chatId)) removeChat(chatId);
  }
  for (const chatId of data.chats) {
    if (!chats.has(chatId)) fetchChat(chatId);
  }
  renderChatList();
});

client.on("message", (message) => {
  const chat = chats.get(message.chatId);
  if (!chat) {
    fetchChat(message.chatId);
    return;
  }
  client.delivered(message.chatId, client.lastSeqOf(message.chatId) ?? message.seq);
  if (!chat.lastMessage || Number(message.seq) >= Number(chat.lastMessage.seq)) {
    chat.lastMessage = message;
  }
  const theirs = message.senderId !== me;
  const reading = message.chatId === openChatId && pageVisible() && nearBottom();
  if (theirs && !reading && Number(message.seq) > Number(chat.lastReadSeq)) chat.unreadCount += 1;
  if (theirs) setTyping(message.chatId, message.senderId, false);
  if (message.chatId === openChatId) {
    const follow = nearBottom() || !theirs;
    const isNew = !shown.has(message.id);
    showMessage(message);
    renderReceipt();
    if (follow) scrollToBottom();
    else if (isNew && theirs) newBelow += 1;
    renderJump();
    markRead();
  }
  if (theirs && !replayedOld(message, chat)) notify(chat, message);
  renderChatList();
});

client.on("pending", (item) => {
  if (item.chatId === openChatId) {
    showPending(item);
    scrollToBottom();
  }
});

client.on("sent", (item) => {
  const node = pendingNode(item.clientMessageId);
  if (node) node.remove();
});

client.on("failed", (item, error) => {
  const node = pendingNode(item.clientMessageId);
  if (!node) return;
  node.classList.replace("pending", "failed");
  node.querySelector(".status").textContent = `Not sent: ${error.message}`;
});

client.on("typing", (data) => {
  if (data.userId !== me) setTyping(data.chatId, data.userId, data.isTyping, data.expiresInMs);
});

client.on("read", (data) => {
  const chat = chats.get(data.chatId);
  if (!chat) return;
  const member = chat.members.find((m) => m.id === data.userId);
  if (member && Number(data.seq) > Number(member.lastReadSeq || 0)) member.lastReadSeq = data.seq;
  if (member && Number(data.seq) > Number(member.lastDeliveredSeq || 0)) {
    member.lastDeliveredSeq = data.seq; // a read is delivered too
  }
  if (data.userId === me) {
    if (Number(data.seq) > Number(chat.lastReadSeq)) chat.lastReadSeq = data.seq;
    if (!chat.lastMessage || Number(chat.lastReadSeq) >= Number(chat.lastMessage.seq)) {
      chat.unreadCount = 0;
    }
    renderChatList();
  }
  if (data.chatId === openChatId) renderReceipt();
});

client.on("presence", ({ userId, online: isUp }) => {
  if (isUp) online.add(userId);
  else online.delete(userId);
  renderChatList();
});

client.on("chat", ({ chatId, event, chat }) => {
  if (event === "added") fetchChat(chatId);
  else if (event === "updated" && chat) {
    if (!chats.has(chatId)) return; // removed meanwhile
    upsertChat(chat);
    renderChatList();
  } else if (event === "removed") removeChat(chatId);
});

/** A newer copy of a message (an update, or a deletion as a copy): list preview and chat. */
function changed(message) {
  const chat = chats.get(message.chatId);
  if (chat && chat.lastMessage && chat.lastMessage.id === message.id) {
    chat.lastMessage = message;
    renderChatList();
  }
  if (originals.get(message.id)) originals.set(message.id, message);
  if (message.chatId !== openChatId) return;
  if (shown.has(message.id)) replaceMessage(message);
  else refreshQuotes(message.id); // an original not on screen, quoted by a reply that is
}

client.on("update", changed);

client.on("delete", ({ chatId, messageId, seq, rev }) => {
  const chat = chats.get(chatId);
  const known =
    shown.get(messageId) ||
    originals.get(messageId) ||
    (chat && chat.lastMessage && chat.lastMessage.id === messageId ? chat.lastMessage : null);
  const base = known || { id: messageId, chatId, senderId: null, createdAt: new Date().toISOString() };
  changed({ ...base, seq, rev, deleted: true, text: null, reactions: [] });
});

client.on("delivered", (data) => {
  const chat = chats.get(data.chatId);
  if (!chat) return;
  const member = chat.members.find((m) => m.id === data.userId);
  if (member && Number(data.seq) > Number(member.lastDeliveredSeq || 0)) {
    member.lastDeliveredSeq = data.seq;
  }
  if (data.chatId === openChatId) renderReceipt();
});

client.on("synced", (summary) => {
  // More was missed than `sync` replays: show the latest page from the REST history.
  if (openChatId && summary[openChatId] && summary[openChatId].hasMore) openChat(openChatId);
});

function removeChat(chatId) {
  chats.delete(chatId);
  if (chatId === openChatId) {
    if (window.location.hash) window.location.hash = "";
    closeChat();
  }
  renderChatList();
}

// ---------------------------------------------------------------- composer and search

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const box = $("composer-text");
  if (!openChatId || !box.value.trim()) return;
  if (composer.mode === "edit") {
    const message = composer.message;
    if (box.value !== message.text && !client.edit(message.chatId, message.id, box.value)) {
      notice("Offline: try again once connected.");
      return;
    }
    endComposer();
    return;
  }
  const replyTo = composer.mode === "reply" ? composer.message.id : null;
  client.send(openChatId, box.value, { replyTo });
  box.value = "";
  fitComposer();
  endComposer();
});

$("composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "Escape" && composer.mode) {
    endComposer();
  }
});

$("composer-context-cancel").addEventListener("click", () => {
  endComposer();
  $("composer-text").focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (menu) {
    const button = menu.node.querySelector(".menu-button");
    closeMenu();
    if (button) button.focus();
  }
  if (!$("chat-menu").hidden) {
    closeChatMenu();
    $("chat-menu-button").focus();
  }
});

/** The composer grows with its text, up to a few lines (then it scrolls). */
function fitComposer() {
  const box = $("composer-text");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight + 2, 160)}px`;
}

$("composer-text").addEventListener("input", (event) => {
  fitComposer();
  if (!openChatId) return;
  if (event.target.value.trim()) client.typing(openChatId);
  else client.stopTyping(openChatId);
});

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 80) loadOlder();
  renderJump();
  markRead();
});

$("jump").addEventListener("click", () => {
  scrollToBottom();
  markRead();
});

document.addEventListener("visibilitychange", markRead);

let searchTimer = null;
$("user-search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const query = event.target.value.trim();
  $("search-hint").hidden = !query || query.length >= SEARCH_MIN;
  if (query.length < SEARCH_MIN) {
    $("user-results").replaceChildren();
    return;
  }
  searchTimer = setTimeout(async () => {
    try {
      const users = await searchUsers(query);
      $("user-results").replaceChildren(
        ...(users.length
          ? users.map((user) =>
              el(
                "li",
                {},
                el(
                  "button",
                  { type: "button", class: "user-item", onclick: () => startChat(user) },
                  user.username,
                ),
              ),
            )
          : [el("li", { class: "muted" }, "Nobody by that name.")]),
      );
    } catch {
      $("user-results").replaceChildren(el("li", { class: "muted" }, "Search failed."));
    }
  }, 200);
});

async function searchUsers(query) {
  const answer = await api(`/api/users/?search=${encodeURIComponent(query)}`);
  return (Array.isArray(answer) ? answer : answer.results).filter((user) => user.id !== me);
}

async function startChat(user) {
  const chat = upsertChat(await api("/api/chats/", { method: "POST", body: { memberIds: [user.id] } }));
  $("user-search").value = "";
  $("user-results").replaceChildren();
  $("search-hint").hidden = true;
  renderChatList();
  goToChat(chat.id);
}

$("retry-now").addEventListener("click", () => client.reconnectNow());

// ---------------------------------------------------------------- desktop notifications

const canNotify = "Notification" in window;

function renderNotifyBar() {
  if (!canNotify) {
    $("notify-bar").hidden = true;
    return;
  }
  const permission = Notification.permission;
  $("notify-bar").hidden = permission === "granted";
  $("notify-on").hidden = permission !== "default";
  $("notify-state").textContent =
    permission === "denied" ? "Notifications are blocked in this browser's site settings." : "";
}

/** Web Push too (the service worker shows a notification when no page is open): where the
 * browser has a push service. Without one, the page's own notifications still work. */
function subscribeToPush() {
  enablePush({ csrfToken }).catch((error) => console.warn("biogram: push", error));
}

$("notify-on").addEventListener("click", async () => {
  try {
    await Notification.requestPermission();
  } catch (error) {
    console.warn("biogram: notification permission", error);
  }
  renderNotifyBar();
  if (Notification.permission === "granted") subscribeToPush();
});

/** A message from someone else older than this was missed while away: no notification for it. */
const NOTIFY_MAX_AGE_MS = 5 * 60 * 1000;

function replayedOld(message, chat) {
  return (
    Date.now() - Date.parse(message.createdAt) > NOTIFY_MAX_AGE_MS ||
    Number(message.seq) <= Number(chat.lastReadSeq)
  );
}

/** A desktop notification for a message, unless its chat is muted or open in a visible tab. */
function notify(chat, message) {
  if (!canNotify || Notification.permission !== "granted" || chat.notificationsMuted) return;
  if (message.chatId === openChatId && pageVisible()) return;
  const sender = usernameOf(message.senderId);
  const title = chat.isDirect ? sender : chatTitle(chat);
  const text = message.deleted ? "Message deleted" : snippet(message.text || "");
  try {
    const shownNotification = new Notification(title, {
      body: chat.isDirect ? text : `${sender}: ${text}`,
      tag: `chat-${chat.id}`,
      data: { chatId: chat.id },
    });
    shownNotification.onclick = () => {
      window.focus();
      goToChat(chat.id);
      shownNotification.close();
    };
  } catch (error) {
    console.warn("biogram: notification", error); // some browsers allow only the service worker's
  }
}

// ---------------------------------------------------------------- the chat's menu and dialogs

function openChatMenu() {
  closeMenu();
  $("chat-menu").hidden = false;
  $("chat-menu-button").setAttribute("aria-expanded", "true");
  const first = [...$("chat-menu").querySelectorAll("button")].find((b) => !b.hidden);
  if (first) first.focus();
}

function closeChatMenu() {
  $("chat-menu").hidden = true;
  $("chat-menu-button").setAttribute("aria-expanded", "false");
}

$("chat-menu-button").addEventListener("click", (event) => {
  event.stopPropagation();
  if ($("chat-menu").hidden) openChatMenu();
  else closeChatMenu();
});

$("chat-menu").addEventListener("keydown", (event) => {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const items = [...$("chat-menu").querySelectorAll("button")].filter((b) => !b.hidden);
  const at = items.indexOf(document.activeElement);
  const step = event.key === "ArrowDown" ? 1 : -1;
  items[(at + step + items.length) % items.length].focus();
});

document.addEventListener("click", (event) => {
  if (!$("chat-menu").hidden && !$("chat-menu").contains(event.target)) closeChatMenu();
});

$("back").addEventListener("click", () => {
  window.location.hash = "";
});

function showDialog(id) {
  closeChatMenu();
  const dialog = $(id);
  dialog.querySelectorAll(".errors").forEach((node) => {
    node.hidden = true;
  });
  dialog.showModal();
  return dialog;
}

for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("click", (event) => {
    if (event.target.closest("[data-close]")) dialog.close();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnFocusTo && document.contains(dialog.returnFocusTo)) dialog.returnFocusTo.focus();
  });
}

function dialogError(id, error) {
  $(id).textContent = error.message || String(error);
  $(id).hidden = false;
}

$("menu-mute").addEventListener("click", async () => {
  closeChatMenu();
  const chat = chats.get(openChatId);
  if (!chat) return;
  try {
    const answer = await api(`/api/chats/${chat.id}/notifications/`, {
      method: "PUT",
      body: { muted: !chat.notificationsMuted },
    });
    chat.notificationsMuted = answer.muted;
    renderChatList();
    notice(answer.muted ? "Notifications muted for this chat." : "Notifications on for this chat.");
  } catch (error) {
    notice(`Could not change notifications: ${error.message}`);
  }
  $("chat-menu-button").focus();
});

/** A people picker: a search box (2 characters or more), its results, and the chosen. */
function picker(container) {
  const chosen = new Map(); // userId -> username
  const input = el("input", {
    id: container.dataset.input,
    type: "search",
    placeholder: "Search people",
    autocomplete: "off",
  });
  const results = el("ul", { class: "user-results", "aria-label": "People found" });
  const picked = el("ul", { class: "chips", "aria-label": "Chosen" });
  const renderPicked = () =>
    picked.replaceChildren(
      ...[...chosen].map(([id, name]) =>
        el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              class: "chip",
              "aria-label": `Remove ${name}`,
              onclick: () => {
                chosen.delete(id);
                renderPicked();
                input.focus();
              },
            },
            `${name} ×`,
          ),
        ),
      ),
    );
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const query = input.value.trim();
    if (query.length < SEARCH_MIN) {
      results.replaceChildren(
        query ? el("li", { class: "hint" }, "Type at least 2 characters.") : "",
      );
      return;
    }
    timer = setTimeout(async () => {
      try {
        const users = (await searchUsers(query)).filter((u) => !container.exclude?.has(u.id));
        results.replaceChildren(
          ...(users.length
            ? users.map((user) =>
                el(
                  "li",
                  {},
                  el(
                    "button",
                    {
                      type: "button",
                      class: "user-item",
                      onclick: () => {
                        chosen.set(user.id, user.username);
                        renderPicked();
                        input.value = "";
                        results.replaceChildren();
                        input.focus();
                      },
                    },
                    user.username,
                  ),
                ),
              )
            : [el("li", { class: "hint" }, "Nobody by that name.")]),
        );
      } catch {
        results.replaceChildren(el("li", { class: "hint" }, "Search failed."));
      }
    }, 200);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") event.preventDefault(); // Enter picks nothing; it never submits
  });
  container.replaceChildren(picked, input, results);
  return {
    chosen,
    reset(exclude = new Set()) {
      container.exclude = exclude;
      chosen.clear();
      input.value = "";
      results.replaceChildren();
      renderPicked();
    },
  };
}

const groupPicker = picker($("group-picker"));
const addPicker = picker($("add-picker"));

$("new-group").addEventListener("click", () => {
  $("group-title").value = "";
  groupPicker.reset(new Set([me]));
  showDialog("group-dialog").returnFocusTo = $("new-group");
  $("group-title").focus();
});

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("group-title").value.trim();
  if (!title) {
    dialogError("group-error", "Give the group a name.");
    $("group-title").focus();
    return;
  }
  try {
    const chat = upsertChat(
      await api("/api/chats/", {
        method: "POST",
        body: { title, memberIds: [...groupPicker.chosen.keys()] },
      }),
    );
    $("group-dialog").returnFocusTo = null;
    $("group-dialog").close();
    renderChatList();
    goToChat(chat.id);
  } catch (error) {
    dialogError("group-error", error);
  }
});

$("menu-rename").addEventListener("click", () => {
  const chat = chats.get(openChatId);
  if (!chat) return;
  $("rename-title").value = chat.title;
  showDialog("rename-dialog").returnFocusTo = $("chat-menu-button");
  $("rename-title").select();
});

$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const chat = chats.get(openChatId);
  const title = $("rename-title").value.trim();
  if (!chat) return;
  if (!title) {
    dialogError("rename-error", "A group needs a name.");
    return;
  }
  try {
    upsertChat(await api(`/api/chats/${chat.id}/`, { method: "PATCH", body: { title } }));
    renderChatList();
    $("rename-dialog").close();
  } catch (error) {
    dialogError("rename-error", error);
  }
});

$("menu-add").addEventListener("click", () => {
  const chat = chats.get(openChatId);
  if (!chat) return;
  addPicker.reset(new Set(chat.members.map((m) => m.id)));
  showDialog("add-dialog").returnFocusTo = $("chat-menu-button");
  $("add-search").focus();
});

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const chat = chats.get(openChatId);
  if (!chat) return;
  if (!addPicker.chosen.size) {
    dialogError("add-error", "Search for someone to add first.");
    return;
  }
  try {
    for (const userId of addPicker.chosen.keys()) {
      upsertChat(
        await api(`/api/chats/${chat.id}/members/`, { method: "POST", body: { userId } }),
      );
    }
    renderChatList();
    $("add-dialog").close();
  } catch (error) {
    dialogError("add-error", error);
  }
});

function renderMembers(chat) {
  const count = chat.members.length;
  $("members-count").textContent = `${count} ${count === 1 ? "member" : "members"}`;
  const sorted = [...chat.members].sort((a, b) => a.username.localeCompare(b.username));
  $("members-list").replaceChildren(
    ...sorted.map((member) => {
      const state = member.id === me ? (connected ? "online" : "unknown") : presenceOf([member.id]);
      return el(
        "li",
        { dataset: { userId: member.id } },
        presenceDot(state),
        el("span", { class: "member-name" }, member.id === me ? `${member.username} (you)` : member.username),
        el("span", { class: "member-state" }, state),
      );
    }),
  );
}

$("menu-members").addEventListener("click", () => {
  const chat = chats.get(openChatId);
  if (!chat) return;
  renderMembers(chat);
  showDialog("members-dialog").returnFocusTo = $("chat-menu-button");
  $("members-dialog").querySelector("[data-close]").focus();
});

$("menu-leave").addEventListener("click", () => {
  const chat = chats.get(openChatId);
  if (!chat) return;
  $("leave-text").textContent = chat.isDirect
    ? `You leave your chat with ${chatTitle(chat)}; starting it again brings you both back.`
    : `You leave "${chatTitle(chat)}" and stop receiving its messages.`;
  showDialog("leave-dialog").returnFocusTo = $("chat-menu-button");
  $("leave-dialog").querySelector("[data-close]").focus();
});

$("leave-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const chatId = openChatId;
  if (!chatId) return;
  try {
    await api(`/api/chats/${chatId}/members/${me}/`, { method: "DELETE" });
    $("leave-dialog").returnFocusTo = null;
    $("leave-dialog").close();
    removeChat(chatId);
    $("user-search").focus();
  } catch (error) {
    dialogError("leave-error", error);
  }
});

// ---------------------------------------------------------------- start

async function start() {
  try {
    // The chat list comes in pages (cursor pagination): follow `next` to the end.
    for (let path = "/api/chats/?limit=200"; path; ) {
      const page = await api(path);
      page.results.forEach(upsertChat);
      path = page.next;
    }
  } catch (error) {
    console.warn("biogram: chat list", error);
  }
  renderChatList();
  renderNotifyBar();
  if (canNotify && Notification.permission === "granted") subscribeToPush(); // kept current
  client.connect();
  followHash();
}

window.addEventListener("hashchange", followHash);

start();

