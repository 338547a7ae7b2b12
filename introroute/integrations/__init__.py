"""Ways to use introroute from other systems' extension points (LiteLLM's complexity router, ...)."""
