"""The drop stage: a claimed, archived job's policy and archive re-checked, the chunk proven unchanged
(`fingerprint`) and dropped under a lock readers pass (`dropper`); `stage.DropStage` runs it."""
