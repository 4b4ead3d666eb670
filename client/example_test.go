package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ringkv/ringkv/client"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Any reachable node will do: the client learns the rest of the cluster.
	c, err := client.New(ctx, []string{"127.0.0.1:7001", "127.0.0.1:7002"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	put, err := c.Put(ctx, []byte("greeting"), []byte("hello"), client.Strong)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored version", put.Version, "at", put.Timestamp)

	item, err := c.Get(ctx, []byte("greeting"), client.Quorum)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (version %d)\n", item.Value, item.Version)

	if _, err := c.Delete(ctx, []byte("greeting"), client.Fast); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Get(ctx, []byte("greeting")); errors.Is(err, client.ErrNotFound) {
		fmt.Println("deleted")
	}
}
