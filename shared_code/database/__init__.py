"""The source database: connections (`connection`, `auth`), catalog reads (`catalog`) and row streams (`extract`)."""
