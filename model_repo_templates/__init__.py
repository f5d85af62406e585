"""Jinja2 templates for the generated text files that are neither protobuf nor structured YAML/JSON."""
