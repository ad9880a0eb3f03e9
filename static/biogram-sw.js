// The service worker of the Biogram page (served at /biogram-sw.js, scope "/"): it shows each
// pushed notification and, when one is clicked, brings a tab of the page to its chat.
//
// A push carries one JSON object: {type: "message", chatId, messageId, seq, senderId, senderName,
// preview, count, userIds, title, body, url} (docs/protocol.md, "Notifications"). Its tag is the
// chat's, so a newer notification of a chat replaces the one still shown.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { title: "Biogram", body: event.data ? event.data.text() : "" };
  }
  const title = data.title || "Biogram";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: data.body || "",
      tag: data.chatId ? `chat-${data.chatId}` : undefined,
      renotify: Boolean(data.chatId),
      data: { url: data.url || "/" },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data?.url || "/", self.location.origin).href;
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const page = tabs.find((tab) => new URL(tab.url).origin === self.location.origin);
      if (page) {
        await page.focus();
        // The page follows its hash (`#chat-<id>`): navigating to it opens the chat.
        return page.navigate(url).catch(() => page.postMessage({ type: "open", url }));
      }
      return self.clients.openWindow(url);
    })(),
  );
});
