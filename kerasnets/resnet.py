"""(family module, being written)"""
