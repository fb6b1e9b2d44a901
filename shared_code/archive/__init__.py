"""The archive stage: one claimed job's chunk read in one snapshot, written as verified Parquet, committed to its Delta
table, sealed and recorded (`stage.ChunkArchiver`; the file writer is `writer.ChunkFileWriter`)."""
