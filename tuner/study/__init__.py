"""A study's storage and its sealed data: opening, the split record, the read side, the trials' bags."""
