"""The goal set: AdvBench download, verification and sampling."""
