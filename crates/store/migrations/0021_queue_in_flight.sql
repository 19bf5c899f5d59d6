-- A received message's latest receipt and visibility timeout, so that a
-- message in flight when the node stops stays in flight after it starts (as
-- on AWS): its receipt handle still deletes it, and a FIFO group stays held.
ALTER TABLE queue_messages ADD COLUMN receipt INTEGER;
ALTER TABLE queue_messages ADD COLUMN received_ms INTEGER;
ALTER TABLE queue_messages ADD COLUMN invisible_until_ms INTEGER;
