-- 009_attempt_provider_message_id: the provider's own id of a delivered message.
--
-- Design note. A provider that accepts a message names it: Twilio's message SID (SM...), FCM's
-- message name (projects/P/messages/ID). Kept on the attempt row of the call that delivered
-- it, a notification can be matched with the provider's logs, its status callbacks and a
-- support case. Only accepted calls have one; other rows keep NULL. Nullable with no default,
-- so adding it rewrites nothing. No index: the id is read with its attempts, never searched
-- (yet); an index can come with a lookup that needs it.

ALTER TABLE attempts ADD COLUMN provider_message_id text;
