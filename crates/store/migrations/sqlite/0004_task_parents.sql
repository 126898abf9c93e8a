-- Delegated tasks: a task begun with a parent task's token names its parent, and ending a task
-- ends every task derived from it. `depth` is 0 for a task begun without a parent.
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_parent_id ON tasks (parent_id);
