"""The lake: every byte in storage (`lake`), path names (`layout`, `partitioning`), the Delta log (`delta_table`),
manifests (`manifest`), the immutable copies (`vault`) and lifecycle rules (`lifecycle`)."""
