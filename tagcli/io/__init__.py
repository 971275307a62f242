"""Files: streaming table readers/writers, work units and part directories, and the file runner."""
